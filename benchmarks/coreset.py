"""Coreset baselines table: random / herding / k-center, ConvNet-3, full evaluation protocol.

    python benchmarks/coreset.py --dataset fashion-mnist --ipc 1 10 50
Resumable: rerun the same command to continue; finished cells are skipped.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from common import markdown_table, report_command, write_results
from distillset.coreset import select_coreset
from table import Cell, finished_rows, run_table, total_seconds

REFERENCE = [  # measured with VICO-UoE/DatasetCondensation evaluate_synset (5 models), from the issue
    {"dataset": "fashion-mnist", "method": "random", "ipc": 10, "metric": "test_accuracy", "mean": 74.5, "std": 0.6,
     "source": ("reference code (VICO-UoE/DatasetCondensation evaluate_synset), "
                "measured on this machine type by the issue author")},
    {"dataset": "fashion-mnist", "method": "random", "ipc": 50, "metric": "test_accuracy", "mean": 84.0, "std": 0.2,
     "source": ("reference code (VICO-UoE/DatasetCondensation evaluate_synset), "
                "measured on this machine type by the issue author")},
]


def build(cell: Cell, splits, work: Path):
    subset = select_coreset(splits, cell.method, cell.ipc, seed=cell.seed, feature_epochs=3)
    return subset, {"method": cell.method, "feature_model": "convnet3", "feature_epochs": 3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--ipc", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--methods", nargs="+", default=["random", "herding", "kcenter"])
    parser.add_argument("--models", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--eval-compile", action="store_true", help="torch.compile the evaluated networks")
    parser.add_argument("--name", default=None, help="result name (default coreset_<dataset>)")
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite the result files from the finished cells; build and train nothing")
    args = parser.parse_args()
    name = args.name or f"coreset_{args.dataset.replace('-', '_')}"
    cells = [Cell(args.dataset, m, ipc, resample=m == "random") for ipc in args.ipc for m in args.methods]
    start = time.perf_counter()

    def write(rows: list[dict]) -> None:
        rows = sorted(rows, key=lambda r: (r["ipc"], args.methods.index(r["method"])
                                           if r["method"] in args.methods else 99))
        table = [{"method": r["method"], "ipc": r["ipc"], "accuracy": f"{r['mean']:.1f} ± {r['std']:.1f}",
                  "n": r["n"], "epochs": r["epochs"]} for r in rows]
        md = markdown_table(table, ["method", "ipc", "accuracy", "n", "epochs"])
        md += "\nReference (issue author, reference code): random IPC 10 74.5 ± 0.6, IPC 50 84.0 ± 0.2.\n"
        wall = max(total_seconds(name), time.perf_counter() - start)
        write_results(name, report_command(name, args.report_only), rows, REFERENCE, wall, md)

    if args.report_only:
        write(finished_rows(name))
        return
    write(run_table(name, cells, build, num_models=args.models, epochs=args.epochs, device=args.device,
                    precision=args.precision, compile=args.eval_compile, on_cell=write))

if __name__ == "__main__":
    main()
