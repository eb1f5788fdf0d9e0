#!/usr/bin/env bash
# The checks that need a GPU, in one script that fits a few minutes of a lent machine (one NVIDIA GPU, no internet):
#   1. the DM step on the GPU, reference loop vs engine (benchmarks/dm_speed.py; Fashion-MNIST IPC 10, batch 256);
#   2. a 2000-iteration Fashion-MNIST IPC 10 DM run on the GPU, evaluated with the full protocol (5 models x 1000
#      epochs), and two short --deterministic runs compared bit for bit;
#   3. with the time left, the IDM / IDM+HDD cells of dm_fashion_mnist that 2 CPU cores cannot finish (the table's
#      own distill command, benchmarks/tables/dm_fashion_mnist.yaml; resumable: SIGTERM at the deadline checkpoints).
# Results: $OUT/gpu_check.json (+ .md) in the benchmark result format, the logs, and $OUT/sets.tgz (finished sets,
# to unpack over the checkout here: benchmarks/work/sets/...; the Snakemake workflow then evaluates / collects them).
#
# Prepare here (both folders are git-ignored):
#   mkdir -p .device-data && cp /usr/share/datasets/fashion-mnist/* .device-data/
#   .venv/bin/pip download --no-deps -d .whl geoopt==0.5.1          # the one dependency missing there
# Run there (carry .device-data and .whl); the copy there has no .git, so pass the commit:
#   BENCH_COMMIT=<git rev-parse HEAD here> bash benchmarks/gpu_check.sh 540
# A CPU smoke test of the script itself (tiny sizes, a scratch work folder):
#   DEVICE=cpu ITERATIONS=20 EPOCHS=1 SPEED_ITERATIONS=1 WORK=/tmp/gpu_check_work OUT=/tmp/gpu_check bash benchmarks/gpu_check.sh 300
set -u
budget=${1:-540}
start=$(date +%s)
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
DEVICE=${DEVICE:-cuda}
ITERATIONS=${ITERATIONS:-2000}
EPOCHS=${EPOCHS:-1000}
SPEED_ITERATIONS=${SPEED_ITERATIONS:-10}
out=${OUT:-/tmp/gpu_check}
work=${WORK:-benchmarks/work}
mkdir -p "$out" "$work"
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
        && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
if [ -d .device-data ] && [ ! -d /usr/share/datasets/fashion-mnist ]; then
    mkdir -p /usr/share/datasets && cp -r .device-data /usr/share/datasets/fashion-mnist
fi
python3 -c "import torch, distillset; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" \
    || { echo "distillset does not import here: nothing to run"; exit 1; }
if [ "$DEVICE" = cuda ]; then
    python3 -c "import torch; assert torch.cuda.is_available(); print(torch.cuda.get_device_name(0))" \
        || { echo "no CUDA device here: nothing to run"; exit 1; }
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/nvidia-smi.csv" 2>&1
fi
left() { echo $(( budget - ($(date +%s) - start) )); }
distillset() { python3 -m distillset "$@"; }
GPU="--device $DEVICE --precision bf16"

# 1. DM step: reference loop vs engine (fp32 reference as the DM code; engine bf16 real pass + compile)
timeout -s TERM 150 python3 benchmarks/dm_speed.py --dataset fashion-mnist --ipc 10 --batch-real 256 \
    --iterations "$SPEED_ITERATIONS" --rounds 3 --device "$DEVICE" --compile > "$out/dm_speed.jsonl" 2> "$out/dm_speed.err"

# 2. DM IPC 10, full protocol; resumable (a rerun continues the distillation and the evaluation)
dm="$work/gpu/fashion-mnist-dm-ipc10-it$ITERATIONS"
timeout -s TERM $(( $(left) - 60 )) python3 -m distillset distill --method dm --dataset fashion-mnist --ipc 10 \
    --iterations "$ITERATIONS" --out "$dm" --resume $GPU > "$out/dm_distill.log" 2>&1
if [ -f "$dm/manifest.json" ]; then
    timeout -s TERM $(( $(left) - 60 )) python3 -m distillset evaluate "$dm" --models 5 --epochs "$EPOCHS" $GPU \
        > "$out/dm_evaluate.log" 2>&1
fi
for run in a b; do  # --deterministic: two runs of the same command give the same bits
    timeout -s TERM 90 python3 -m distillset distill --method dm --dataset fashion-mnist --ipc 10 --iterations 20 \
        --out "$out/deterministic-$run" --deterministic --no-compile $GPU > "$out/deterministic-$run.log" 2>&1
done

# 3. IDM / IDM+HDD cells of dm_fashion_mnist, until 30 s before the budget ends
for ipc in 10 50; do
    [ "$(left)" -gt 90 ] || break
    timeout -s TERM --kill-after=20 $(( $(left) - 30 )) python3 -m distillset distill --method idm,idm+hdd \
        --dataset fashion-mnist --ipc $ipc --seed 0 --out "$work/sets/fashion-mnist-idm+idm+hdd-ipc$ipc-it2000-s0" \
        --iterations 2000 --resume --compile --real-precision bf16 --device "$DEVICE" > "$out/idm-ipc$ipc.log" 2>&1
done

python3 - "$out" "$dm" "$work" "$(( $(date +%s) - start ))" <<'EOF'
"""Collect what ran into gpu_check.json (benchmark result format)."""
import hashlib, json, sys
from pathlib import Path
sys.path.insert(0, "benchmarks")
from common import markdown_table, write_results
out, dm, work, wall = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), float(sys.argv[4])
base = {"dataset": "fashion-mnist", "ipc": 10, "model": "convnet3"}
rows = []
speed = [json.loads(line) for line in (out / "dm_speed.jsonl").read_text().splitlines() if line.startswith("{")] \
    if (out / "dm_speed.jsonl").is_file() else []
for line in speed:
    if "impl" in line:
        rows.append({**base, "method": "dm", "metric": "sec_per_iter", "mean": line["sec_per_iter_median"],
                     "std": line["sec_per_iter_std"], "n": line["iterations"], "iterations": line["iterations"],
                     "epochs": 0, "extra": {k: v for k, v in line.items() if k not in ("sec_per_iter_median",)}})
evaluation = dm / "evaluation.json"
if evaluation.is_file():
    for key, entry in json.loads(evaluation.read_text()).items():
        rows.append({**base, "method": "dm", "metric": "test_accuracy", "mean": round(entry["mean"], 2),
                     "std": round(entry["std"], 2), "n": entry["n"], "iterations": int(dm.name.split("-it")[-1]),
                     "epochs": entry["config"]["epochs"],
                     "extra": {"evaluation": key, "accuracies": entry["accuracies"], "runtime": entry.get("runtime")}})
def pixels(run):
    from safetensors.numpy import load_file
    path = run / "synthetic.safetensors"
    return hashlib.sha256(load_file(path)["images"].tobytes()).hexdigest() if path.is_file() else None
hashes = [pixels(out / f"deterministic-{r}") for r in "ab"]
rows.append({**base, "method": "dm", "metric": "deterministic_rerun_identical", "mean": float(hashes[0] == hashes[1]
             and hashes[0] is not None), "std": 0.0, "n": 2, "iterations": 20, "epochs": 0, "extra": {"sha256": hashes}})
for ipc in (10, 50):
    for method in ("idm", "idm+hdd"):
        log = work / "sets" / f"fashion-mnist-idm+idm+hdd-ipc{ipc}-it2000-s0" / method / "log.jsonl"
        if log.is_file():
            last = [json.loads(l) for l in log.read_text().splitlines() if '"seconds"' in l][-1:]
            if last:
                rows.append({**base, "ipc": ipc, "method": method, "metric": "sec_per_iter",
                             "mean": round(last[0]["seconds"] / last[0]["iteration"], 4), "std": 0.0, "n": 1,
                             "iterations": last[0]["iteration"], "epochs": 0,
                             "extra": {"reached_iteration": last[0]["iteration"], "of": 2000}})
table = [{**{k: r[k] for k in ("method", "ipc", "metric", "mean", "std", "n", "iterations", "epochs")},
          "impl": r["extra"].get("impl", "")} for r in rows]
paper = [{**base, "method": "dm", "metric": "sec_per_iter", "mean": 0.051, "std": 0.0,
          "source": "reference DM step (VICO-UoE/DatasetCondensation main_DM.py) measured on an H100, batch 256"}]
write_results("gpu_check", "BENCH_COMMIT=... bash benchmarks/gpu_check.sh", rows, paper, wall,
              markdown=markdown_table(table, list(table[0]) if table else ["method"]), results=out)
EOF
tar czf "$out/sets.tgz" $(find "$work/sets" "$work/gpu" -name manifest.json -newer "$out/dm_speed.err" \
    -printf '%h/manifest.json %h/synthetic.safetensors %h/evaluation.json %h/log.jsonl\n' 2>/dev/null \
    | tr ' ' '\n' | while read -r f; do [ -f "$f" ] && echo "$f"; done) 2>/dev/null
echo "gpu_check finished after $(( $(date +%s) - start )) s (budget $budget s); results in $out"
ls -la "$out"
