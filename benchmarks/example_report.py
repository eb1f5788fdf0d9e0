"""The example HTML report (docs/example-report.html) from published sets and their result rows.

    python benchmarks/example_report.py --table dm_fashion_mnist \
        --sets fashion-mnist-dm-ipc10-it2000-s0 fashion-mnist-hdd-ipc10-it2000-s0 fashion-mnist-random-ipc10-it0-s0

Each set is a published artifact, ``benchmarks/artifacts/<table>/<set>``, and the report names it by that path;
its accuracy row is the table's row of that set (``benchmarks/results/<table>.json``). For the random baseline
(a new subset per model) the set shown is the first subset and the row is over all of them, as in the table.
Rows of the cross-architecture result (``--cross-arch``, default ``cross_arch_elf``) on the same set (same tensor
hash) are added: ResNet-18 / ResNetAP-10 columns, with and without ELF.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from common import RESULTS, ROOT
from distillset.io import RunDir, atomic_write_json
from distillset.report import build_report

ARTIFACTS = ROOT / "artifacts"
ROW_TAGS = ("imbalance", "keep", "prune")


def set_key(row: dict[str, Any]) -> str:
    """The published set a table row was measured on, as named under benchmarks/artifacts/<table>/ (for a row
    with a new subset per model, the first subset)."""
    extra = row["extra"]
    tags = "".join(f"-{k}{v}" for k, v in sorted(extra.items()) if k in ROW_TAGS or k.startswith("param_"))
    return f"{row['dataset']}-{row['method']}-ipc{row['ipc']}-it{row['iterations']}-s{extra.get('seed', 0)}{tags}"


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
    """A copy of the published set ``key`` of ``table`` under ``out_root`` at the artifact's own relative path,
    with an evaluation.json made from its result row (and the cross-architecture rows on the same set)."""
    rows = [row for row in json.loads((RESULTS / f"{table}.json").read_text())["rows"] if set_key(row) == key]
    if len(rows) != 1:
        sys.exit(f"{len(rows)} rows of benchmarks/results/{table}.json were measured on {key!r}; name one set")
    artifact = ARTIFACTS / table / key
    if not RunDir(artifact).manifest.is_file():
        sys.exit(f"no published set {artifact}")
    run = out_root / artifact.relative_to(ROOT.parent)
    shutil.copytree(artifact, run)
    entries = {f"{key}-table": evaluation_entry(rows[0])}
    if cross_arch:
        sha256 = json.loads(RunDir(artifact).manifest.read_text())["tensors"]["sha256"]
        entries.update(cross_arch_entries(cross_arch, sha256, rows[0]["model"]))
    atomic_write_json(RunDir(run).evaluation, entries)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", default="dm_fashion_mnist")
    parser.add_argument("--sets", nargs="+", required=True,
                        help="published sets (folders in benchmarks/artifacts/TABLE)")
    parser.add_argument("--out", type=Path, default=ROOT.parent / "docs" / "example-report.html")
    parser.add_argument("--title", default="distillset example report")
    parser.add_argument("--caption", default="")
    parser.add_argument("--cross-arch", default="cross_arch_elf",
                        help="result file whose rows on the same sets are added ('' for none)")
    args = parser.parse_args()
    out = args.out.resolve()
    with tempfile.TemporaryDirectory() as tmp:
        runs = [run_dir_for(args.table, key, Path(tmp), args.cross_arch).relative_to(tmp) for key in args.sets]
        os.chdir(tmp)  # the report names each set by its path: the artifact's, relative to the repository
        path = build_report(runs, out, title=args.title, caption=args.caption)
    print(f"report: {path}")


if __name__ == "__main__":
    main()
