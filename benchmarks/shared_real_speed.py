"""Seconds per distilled set and iteration: each method alone vs all of them in lockstep sharing the real pass.

    python benchmarks/shared_real_speed.py --methods dm hdd csdm --ipc 10 --iterations 10 --compile --record
    python benchmarks/shared_real_speed.py --methods idm idm+hdd --ipc 10 --iterations 5 --compile --record \
        --name shared_queue_speed

``alone``: ``Distiller.step`` of one run (the engine's normal step). ``together``: one lockstep iteration of
all the runs (``engine.share_real_pass``: the real batches, DSA draws and network are the same for every
run, so the real-feature pass is computed once), divided by the number of runs. Same settings as
dm_speed.py (ConvNet-3, DSA, batch_real 256 per class, bf16 real pass).
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import markdown_table, write_results  # noqa: E402  (also applies distillset.runtime settings)
from distillset.data import load_dataset  # noqa: E402
from distillset.engine import Distiller, config_for_method  # noqa: E402
from distillset.engine.distiller import share_real_pass  # noqa: E402
from dm_speed import step_arguments, time_steps  # noqa: E402


def main() -> None:
    parser = step_arguments(__doc__)
    parser.add_argument("--methods", nargs="+", default=["dm", "hdd", "csdm"])
    parser.add_argument("--record", action="store_true", help="write benchmarks/results/<name>.json")
    parser.add_argument("--name", default="shared_real_speed", help="result name for --record")
    args = parser.parse_args()

    splits = load_dataset(args.dataset)

    def distiller(method: str) -> Distiller:
        config = config_for_method(method, ipc=args.ipc, iterations=args.iterations + args.warmup,
                                   batch_real=args.batch_real, real_precision=args.real_precision,
                                   compile=args.compile)
        return Distiller(splits.train, splits.info, config, device=args.device)

    rows = []
    for method in args.methods:
        single = distiller(method)
        times = time_steps(lambda i, d=single: d.step(), args.iterations, args.warmup)
        rows.append({"mode": "alone", "methods": [method], "sec_per_iter_per_set": round(statistics.median(times), 4),
                     "std": round(statistics.pstdev(times), 4)})
        print(json.dumps(rows[-1]), flush=True)
    group = [distiller(method) for method in args.methods]
    share_real_pass(group)

    def lockstep(i: int) -> None:
        for member in group:
            member.step()

    times = [t / len(group) for t in time_steps(lockstep, args.iterations, args.warmup)]
    median = statistics.median(times)
    rows.append({"mode": "together", "methods": args.methods, "sec_per_iter_per_set": round(median, 4),
                 "std": round(statistics.pstdev(times), 4)})
    print(json.dumps(rows[-1]), flush=True)
    alone_mean = statistics.mean(r["sec_per_iter_per_set"] for r in rows[:-1])
    speedup = alone_mean / median
    print(json.dumps({"speedup_per_set": round(speedup, 2)}), flush=True)
    if args.record:
        common = {"dataset": args.dataset, "ipc": args.ipc, "model": "convnet3", "metric": "sec_per_iter_per_set",
                  "n": args.iterations, "iterations": args.iterations, "epochs": 0}
        result_rows = [{**common, "method": "+".join(r["methods"]) if r["mode"] == "together" else r["methods"][0],
                        "mean": r["sec_per_iter_per_set"], "std": r["std"],
                        "extra": {"mode": r["mode"], "batch_real": args.batch_real, "compile": args.compile,
                                  "real_precision": args.real_precision}} for r in rows]
        md = markdown_table([{"mode": r["mode"], "methods": ", ".join(r["methods"]),
                              "s / iteration / set": r["sec_per_iter_per_set"]} for r in rows],
                            ["mode", "methods", "s / iteration / set"])
        md += f"\nPer-set speed-up of the lockstep group over the mean of the runs alone: {speedup:.2f}x\n"
        wall = sum(r["sec_per_iter_per_set"] * len(r["methods"]) for r in rows) * (args.iterations + args.warmup)
        write_results(args.name, " ".join(["python", "benchmarks/shared_real_speed.py", *sys.argv[1:]]),
                      result_rows, [], wall, md, extra={"speedup_per_set": round(speedup, 2)})


if __name__ == "__main__":
    main()
