"""The example HTML report (docs/example-report.html) from finished benchmark cells.

    python benchmarks/example_report.py --table dm_fashion_mnist \
        --cells fashion-mnist-dm-ipc10-it2000-s0 fashion-mnist-hdd-ipc10-it2000-s0 \
        fashion-mnist-random-ipc10-it0-s0-resampled

Each cell becomes a run directory under benchmarks/work/report/ (the saved set and manifest, the distillation's
log.jsonl when benchmarks/work still has it, and an evaluation.json made from the cell's evaluated models),
and `distillset.report.build_report` renders them. A resampled cell (random baseline: a new subset per model)
shows the set of its first model; its accuracy row is over all of its subsets, as in the result table.
Rows of the cross-architecture result (`--cross-arch`, default `cross_arch_elf`) evaluated on the same set
(same tensor hash) are added to that run: ResNet-18 / ResNetAP-10 columns, with and without ELF.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from common import RESULTS, ROOT, Cells
from distillset.io import RunDir, atomic_write_json
from distillset.report import build_report
from table import ARTIFACTS, WORK

RESAMPLED = "-resampled"


def evaluation_entry(row: dict[str, Any]) -> dict[str, Any]:
    """The `distillset evaluate` entry equivalent to one table row (same fields the report reads)."""
    extra = row["extra"]
    config = {"model": row["model"], "epochs": row["epochs"], "num_models": row["n"],
              "precision": extra.get("eval_precision", "fp32"), "compile": extra.get("eval_compile", False)}
    if extra.get("elf"):
        config["elf"] = extra["elf_config"]
    return {
        "config": config,
        "accuracy_reported": extra.get("accuracy_reported", "final_epoch"),
        "mean": row["mean"], "std": row["std"], "n": row["n"],
        "accuracies": extra["accuracies"], "per_class": extra["per_class"],
    }


def cross_arch_entries(result: str, set_sha256: str, skip_model: str) -> dict[str, dict[str, Any]]:
    """Evaluation entries from ``benchmarks/results/<result>.json`` rows on the set with this tensor hash
    (the plain ``skip_model`` row is left out: the table's own row already covers it)."""
    path = RESULTS / f"{result}.json"
    if not path.is_file():
        return {}
    entries = {}
    for row in json.loads(path.read_text())["rows"]:
        extra = row["extra"]
        if extra.get("set_sha256") != set_sha256 or (row["model"] == skip_model and not extra.get("elf")):
            continue
        entries[f"{row['model']}{'-elf' if extra.get('elf') else ''}-e{row['epochs']}-{result}"] = evaluation_entry(row)
    return entries


def run_dir_for(table: str, key: str, out_root: Path, cross_arch: str) -> Path:
    row = Cells(table).get(key)
    if row is None:
        sys.exit(f"cell {key!r} of {table!r} is not finished (no benchmarks/cells/{table}/{key}.json)")
    set_key = key.removesuffix(RESAMPLED)
    artifact = ARTIFACTS / table / set_key
    if not (artifact / "manifest.json").is_file():
        sys.exit(f"no saved set for {set_key!r} in {artifact}")
    run = out_root / key
    if run.exists():
        shutil.rmtree(run)
    shutil.copytree(artifact, run)
    log = RunDir(WORK / table / set_key).log
    if log.is_file():
        shutil.copy(log, RunDir(run).log)
    entries = {f"{key}-table": evaluation_entry(row["row"])}
    if cross_arch:
        sha256 = json.loads((artifact / "manifest.json").read_text())["tensors"]["sha256"]
        entries.update(cross_arch_entries(cross_arch, sha256, row["row"]["model"]))
    atomic_write_json(RunDir(run).evaluation, entries)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", default="dm_fashion_mnist")
    parser.add_argument("--cells", nargs="+", required=True, help="cell keys (file names in benchmarks/cells/TABLE)")
    parser.add_argument("--out", type=Path, default=ROOT.parent / "docs" / "example-report.html")
    parser.add_argument("--title", default="distillset example report")
    parser.add_argument("--caption", default="")
    parser.add_argument("--cross-arch", default="cross_arch_elf",
                        help="result file whose rows on the same sets are added ('' for none)")
    args = parser.parse_args()
    runs = [Path(os.path.relpath(run_dir_for(args.table, key, WORK / "report", args.cross_arch))) for key in args.cells]
    path = build_report(runs, args.out, title=args.title, caption=args.caption)
    print(f"report: {path}")


if __name__ == "__main__":
    main()
