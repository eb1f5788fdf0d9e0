#!/usr/bin/env bash
# Fill benchmark cells on a lent GPU machine (the `device` tool of this workplace), then pack the cells and
# sets it wrote into $OUT/cells.tgz and the DM-style checkpoints into $OUT/work.tgz, for unpacking over the checkout here.
#
# Prepare here once per session (both folders are git-ignored):
#   mkdir -p .device-data && cp /usr/share/datasets/fashion-mnist/* .device-data/
#   .venv/bin/pip download --no-deps -d .whl geoopt==0.5.1          # the one dependency missing there
# Run there (carry .device-data and .whl), e.g. with run(timeout_s=600); the copy there has no .git, so pass
# the commit the cells should record:
#   BENCH_COMMIT=<git rev-parse HEAD here> bash benchmarks/device_queue.sh 480
# Back here: tar xzf <files_at>/cells.tgz; tar xzf <files_at>/work.tgz; then rerun the table commands on the
# CPU (they skip every finished cell and rewrite the result files) and commit cells, artifacts and results.
#
# The queue below runs in order until BUDGET seconds are spent; SIGTERM at the deadline makes a running
# distillation finish its iteration and checkpoint (benchmarks/work/, packed too), so the next run resumes.
set -u
budget=${1:-480}
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
        && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
if [ -d .device-data ] && [ ! -d /usr/share/datasets/fashion-mnist ]; then
    mkdir -p /usr/share/datasets && cp -r .device-data /usr/share/datasets/fashion-mnist
fi
python3 -c "import torch, distillset; print('torch', torch.__version__, torch.cuda.get_device_name(0))" \
    || { echo "no CUDA device (or distillset does not import) here: nothing to run"; exit 1; }

GPU="--device cuda --precision bf16 --eval-compile"
queue() {  # dearest on the CPU first: the IDM group's distillation (~16 h on one CPU thread, and its queue
    # checkpoints cannot be carried between CPU sessions), then its evaluations (which the CPU lanes also take
    # on once the sets are here); each line is one resumable table command
    python3 benchmarks/distill_table.py --name dm_fashion_mnist --methods idm idm+hdd --ipc 10 50 --build-only $GPU
    python3 benchmarks/distill_table.py --name dm_fashion_mnist --methods idm idm+hdd --ipc 10 50 $GPU
    python3 benchmarks/distill_table.py --name dm_fashion_mnist --methods random dm hdd --ipc 50 $GPU
    python3 benchmarks/distill_table.py --name cfm_fashion_mnist --methods dm cfm lowpass highpass --ipc 10 50 \
        --reuse dm_fashion_mnist $GPU
    python3 benchmarks/distill_table.py --name csdm_longtail --dataset fashion-mnist-lt --imbalance 0.1 0.01 \
        --methods random dm csdm --ipc 10 $GPU
    python3 benchmarks/distill_table.py --name csdm_longtail --dataset fashion-mnist --methods dm csdm --ipc 10 \
        --reuse dm_fashion_mnist $GPU
    python3 benchmarks/distill_table.py --name prune_fashion_mnist --methods dm --ipc 10 --prune hyperbolic random \
        --keep 0.8 $GPU
}
export -f queue
export GPU
start=$(date +%s)
touch /tmp/device_queue.start  # only what the queue writes goes back (the device returns files of <= 16 MiB)
timeout -s TERM --kill-after=30 "$budget" bash -c queue
echo "queue stopped after $(( $(date +%s) - start )) s (budget $budget s)"
out=${OUT:-/tmp}
find benchmarks/cells benchmarks/artifacts -type f -newer /tmp/device_queue.start > /tmp/device_queue.files
tar czf "$out/cells.tgz" -T /tmp/device_queue.files
# distillation checkpoints, to resume a cell cut by the deadline; IDM's (a queue of up to 100 networks with
# their optimisers, hundreds of MB) exceed what the device tool brings back (16 MiB a file), so they stay.
[ -d benchmarks/work ] && tar czf "$out/work.tgz" --exclude='*idm*' benchmarks/work
ls -la "$out"
