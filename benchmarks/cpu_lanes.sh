#!/usr/bin/env bash
# Fill the pending accuracy tables on this 2-core CPU as two one-thread lanes (two 1-thread jobs finish
# ~15% more work than one 2-thread job here: ad-hoc probe, docs/networks.md). Every command is resumable
# and skips finished cells, so start both lanes again after any stop:
#   nohup setsid benchmarks/cpu_lanes.sh A > benchmarks/logs/laneA.log 2>&1 &
#   nohup setsid benchmarks/cpu_lanes.sh B > benchmarks/logs/laneB.log 2>&1 &
# To change the plan while lanes run, write a new copy and mv it over this file (a running bash keeps
# reading the old file; editing in place would shift its read offset).
# Stop: kill the lane scripts first (pkill -f cpu_lanes.sh), then SIGTERM the python jobs (they checkpoint).
# Lane A: pruning table (keep 20%) -> DM/HDD IPC 50 -> DM pruning keep 80% -> the four IDM cells (one
# lockstep group sharing the queue).
# Lane B: CSDM long-tail rho 0.005 -> CFM IPC 10 -> CSDM rho 0.1, 0.01, balanced -> CFM IPC 50 (waits for lane A's DM IPC 50 row, reused).
set -u
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
mkdir -p benchmarks/logs
run() {  # run <log name> <distill_table args...>
    local log=benchmarks/logs/$1.log
    shift
    echo "$(date -u +%FT%TZ) start: $*" >> "$log"
    .venv/bin/python benchmarks/distill_table.py "$@" --precision bf16 --eval-compile >> "$log" 2>&1
}
case "${1:-}" in
A)
    run prune --name prune_fashion_mnist --methods dm hdd --ipc 10 --prune hyperbolic random --keep 0.2 \
        --reuse dm_fashion_mnist
    run dm50 --name dm_fashion_mnist --methods random dm hdd --ipc 50
    # the other reading of the paper's "20%" (a pruning ratio: 20% removed), DM only (docs/hdd.md)
    run prune --name prune_fashion_mnist --methods dm --ipc 10 --prune hyperbolic random --keep 0.8
    run idm --name dm_fashion_mnist --methods idm idm+hdd --ipc 10 50
    ;;
B)
    lt="--name csdm_longtail --ipc 10 --dataset fashion-mnist-lt"
    run csdm $lt --imbalance 0.005 --methods random dm csdm hdd
    run cfm --name cfm_fashion_mnist --methods dm cfm lowpass highpass --ipc 10 --reuse dm_fashion_mnist
    run csdm $lt --imbalance 0.1 0.01 --methods random dm csdm
    run csdm --name csdm_longtail --ipc 10 --dataset fashion-mnist --methods dm csdm --reuse dm_fashion_mnist
    until [ -f benchmarks/cells/dm_fashion_mnist/fashion-mnist-dm-ipc50-it2000-s0.json ]; do sleep 300; done
    run cfm --name cfm_fashion_mnist --methods dm cfm lowpass highpass --ipc 50 --reuse dm_fashion_mnist
    ;;
*)
    echo "usage: $0 A|B" >&2
    exit 2
    ;;
esac
