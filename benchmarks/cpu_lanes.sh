#!/usr/bin/env bash
# Fill the pending accuracy tables on this 2-core CPU as two one-thread lanes (two 1-thread jobs finish
# ~15% more work than one 2-thread job here: ad-hoc probe, docs/networks.md). Start both after any stop:
#   nohup setsid benchmarks/cpu_lanes.sh A > benchmarks/logs/laneA.log 2>&1 &
#   nohup setsid benchmarks/cpu_lanes.sh B > benchmarks/logs/laneB.log 2>&1 &
# Both lanes run the same table commands, in different orders, and then go round again: the tables claim
# each set and model they work on (benchmarks/table.py), so a lane skips what the other is building or
# training and helps with whatever is left (e.g. both evaluate the IDM sets once the group is distilled).
# Every command resumes from checkpoints in benchmarks/work/ and skips finished cells. On a fresh checkout the
# lanes first restore the work carried over from the last session (benchmarks/carry.py; run `carry.py save`
# and commit benchmarks/carry/ before a session ends).
# To change the plan while lanes run, write a new copy and mv it over this file (a running bash keeps
# reading the old file; editing in place would shift its read offset).
# Stop: kill the lane scripts first (pkill -f cpu_lanes.sh), then SIGTERM the python jobs (they checkpoint).
set -u
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
mkdir -p benchmarks/logs benchmarks/work
flock benchmarks/work/.carry.lock .venv/bin/python benchmarks/carry.py restore  # one lane restores, the other waits
run() {  # run <log name> <distill_table args...>
    local log=benchmarks/logs/$1.log
    shift
    echo "$(date -u +%FT%TZ) start: $*" >> "$log"
    .venv/bin/python benchmarks/distill_table.py "$@" --precision bf16 --eval-compile >> "$log" 2>&1
}
# issue 4: DM/HDD IPC 50, the keep-80% pruning rows (the "pruning ratio 20%" reading, docs/hdd.md), the
# IDM cells. IDM comes last in both lanes, as one lockstep group per IPC (idm10, idm50: each lane distils one,
# ~8-12 h of serial one-thread distillation each): its checkpoints hold the network queue, too large to carry
# through git (benchmarks/carry.py), so it only progresses on a machine whose benchmarks/work/ persists from
# session to session (it has from session 9 to 11) and restarts on a fresh one; a lent GPU distils the sets
# in minutes (benchmarks/device_queue.sh). Their evaluations are carried like any other training.
# Lane `idm` runs all four cells as one group (one queue training for both IPCs) instead.
dm50() { run dm50 --name dm_fashion_mnist --methods random dm hdd --ipc 50; }
prune80() { run prune --name prune_fashion_mnist --methods dm --ipc 10 --prune hyperbolic random --keep 0.8; }
# the spread-keeping hyperbolic rule at keep 20 % (docs/hdd.md: the central rule lost 7 points there)
prunespread() { run prune --name prune_fashion_mnist --methods dm hdd --ipc 10 --prune hyperbolic-spread --keep 0.2; }
# the spread rule beat the full pool by 0.8 points at seed 0 (docs/hdd.md): full, spread and random pools again
# with another distillation seed, to see how much one distilled set moves a row
pruneseed() { run prune --name prune_fashion_mnist --methods dm --ipc 10 --prune hyperbolic-spread random --keep 0.2 --seeds 1; }
idm() { run idm --name dm_fashion_mnist --methods idm idm+hdd --ipc "$@"; }
idm10() { idm 10; }
idm50() { idm 50; }
idmboth() { idm 10 50; }
# issue 6: CFM and its fixed-filter ablations at IPC 50 (IPC 10 is complete; DM rows reused: it waits for the
# DM IPC 50 cell, so the CFM table never distils its own copy of it)
cfm50() {
    [ -f benchmarks/cells/dm_fashion_mnist/fashion-mnist-dm-ipc50-it2000-s0.json ] || return 0
    run cfm --name cfm_fashion_mnist --methods dm cfm lowpass highpass --ipc 50 --reuse dm_fashion_mnist "$@"
}
cfm50sets() { cfm50 --build-only; }  # its ~2-3 h serial distillation first, while the other lane evaluates
# issue 6 ablation: CFM with the official code's schedule over image slots (docs/unidd_cfm.md Sec. 7); its
# per-group gradients are ~5x CFM's early ones at lr_img 1, so the loss scale is 1000 / 5 (= lr_img 0.2)
cfmslots() { run cfm --name cfm_fashion_mnist --methods cfm --ipc 10 --param schedule_over=slots --param scale=200; }
# issue 6 ablation: CFM with its loss scaled by beta_rel^0.5, so its steps keep one size along the schedule
# (the signal gradient grows about as beta_rel^-0.5 at IPC 10, docs/unidd_cfm.md Sec. 4 and 7)
cfmflat() { run cfm --name cfm_fashion_mnist --methods cfm --ipc 10 --param beta_scale_power=0.5; }
case "${1:-}" in
A) order="dm50 prune80 cfm50 prunespread pruneseed cfmslots cfmflat idm10 idm50" ;;
B) order="cfm50sets dm50 cfm50 prune80 prunespread pruneseed cfmflat cfmslots idm50 idm10" ;;
idm) order="idmboth" ;;
*)
    echo "usage: $0 A|B|idm" >&2
    exit 2
    ;;
esac
while true; do
    for job in $order; do
        $job
    done
    sleep 600  # then look again for work the other lane has left (models to train, a cell to finish)
done
