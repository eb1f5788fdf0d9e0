"""Peak resident memory of a DM distillation run (the whole Fashion-MNIST train split in memory).

    python benchmarks/dm_memory.py --ipc 50 --iterations 3
Runs ``distillset distill`` in a child process per setting and reads the child's peak RSS.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import command_line, markdown_table, write_results

SETTINGS = {"fp32": [], "bf16-real": ["--real-precision", "bf16"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--ipc", type=int, default=50)
    parser.add_argument("--iterations", type=int, default=3)
    args = parser.parse_args()
    cli = Path(sys.executable).with_name("distillset")
    rows, start = [], time.perf_counter()
    for name, flags in SETTINGS.items():
        with tempfile.TemporaryDirectory() as out:
            child = subprocess.Popen([str(cli), "distill", "--method", "dm", "--dataset", args.dataset,
                                      "--ipc", str(args.ipc), "--iterations", str(args.iterations), "--out", out,
                                      *flags], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            _, status, usage = os.wait4(child.pid, 0)  # this child's own rusage
        if status != 0:
            raise SystemExit(f"distillset distill failed with status {status} for setting {name}")
        peak_kib = usage.ru_maxrss
        rows.append({"dataset": args.dataset, "method": "dm", "ipc": args.ipc, "model": "convnet3",
                     "metric": "peak_rss_gib", "mean": round(peak_kib / 2**20, 2), "std": 0.0, "n": 1,
                     "iterations": args.iterations, "epochs": 0, "extra": {"setting": name, "limit_gib": 4.0}})
        print(rows[-1], flush=True)
    md = markdown_table([{"setting": r["extra"]["setting"], "peak RSS (GiB)": r["mean"]} for r in rows],
                        ["setting", "peak RSS (GiB)"])
    md += "\nTarget: ≤ 4 GiB on CPU (peak RSS of the whole `distillset distill` process, data included).\n"
    write_results("dm_memory", command_line(), rows, [], time.perf_counter() - start, md)


if __name__ == "__main__":
    main()
