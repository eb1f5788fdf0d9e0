"""A table's result files from its finished models (run by benchmarks/Snakefile's ``table`` rule).

    python benchmarks/collect.py benchmarks/tables/dm_digits.yaml --work benchmarks/work --results benchmarks/results

With ``--merge`` only the rows whose models are all finished are collected, and they replace (or join) the rows
of the same method, IPC, model, learning-rate schedule, labels and ELF settings in the existing result file;
its other rows are kept with the commands behind them (a new cell of a table whose older rows came from
another command).

Each row: mean and population std (as the reference code reports) of its models' final-epoch accuracies, kept
unrounded (tables round once, from these values), the models' accuracies and mean per-class accuracy, the
seconds spent building its set(s) and training its models, and every command behind it (``extra.commands``).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common import elf_label, markdown_table, mean_std, objective_params, write_results
from plan import Row, iter_commands, load_table


def head_tail(per_class: Sequence[float]) -> tuple[float, float]:
    """Mean accuracy of the head and tail classes: the first and last third (rounded up) of the class order,
    which is the long-tailed builder's order from most to fewest training images."""
    third = math.ceil(len(per_class) / 3)
    return sum(per_class[:third]) / third, sum(per_class[-third:]) / third


def result_row(row: Row, work: Path, recorded_work: str) -> dict[str, Any]:
    """The result row of ``row`` from its models' evaluation records under ``work``."""
    records = []
    for model in row.models:
        evaluation = json.loads((work / model.path / "evaluation.json").read_text())
        (entry,) = evaluation.values()  # one model per folder
        records.append(entry)
    sets = {model.set_path: json.loads((work / model.set_path / "manifest.json").read_text()) for model in row.models}
    accuracies = [entry["accuracies"][0] for entry in records]
    mean, std = mean_std(accuracies)
    per_class = [sum(values) / len(values) for values in zip(*(entry["per_class"] for entry in records), strict=True)]
    first = next(iter(sets.values()))
    evaluation = row.evaluation
    extra = {**row.extra, "accuracies": accuracies, "per_class": per_class, "accuracy_reported": "final_epoch",
             "eval_precision": evaluation.precision, "eval_compile": evaluation.compile,
             "build_seconds": round(sum(manifest["wall_seconds"] for manifest in sets.values()), 1),
             "eval_seconds": round(sum(sum(entry["train_seconds"]) for entry in records), 1),
             "commands": list(iter_commands(row, recorded_work))}
    if row.resample:
        extra["sets"] = "one per model (seed + model index)"
    if evaluation.elf is not None:
        recorded = records[0].get("config", {}).get("elf", {})  # teacher placeholders resolved to paths
        extra.update(elf=True, elf_config={k: recorded.get(k, v) for k, v in evaluation.elf})
    extra["labels"] = records[0].get("labels", {"labels": "hard"})  # soft: the teacher's probabilities
    if "teacher" in first:
        extra["set_teacher"] = first["teacher"]
    if row.group.kind == "run":
        extra.update(set=row.group.run, set_sha256=first["tensors"]["sha256"])
    return {"dataset": first["dataset"], "method": row.method, "ipc": first["ipc"], "model": evaluation.model,
            "metric": "test_accuracy", "mean": mean, "std": std, "n": len(records),
            "iterations": first.get("config", {}).get("iterations", 0) if row.group.kind != "coreset" else 0,
            "epochs": evaluation.epochs, "extra": extra}


def row_key(row: dict[str, Any]) -> str:
    """What tells two rows of a result file apart: an updated row replaces the row with its key."""
    extra = row["extra"]
    return json.dumps([row["method"], row["ipc"], row["model"], extra.get("lr_schedule", "constant"),
                       extra.get("labels", {}).get("labels", "hard"), extra.get("elf_config"),
                       extra.get("imbalance"), extra.get("prune"), extra.get("keep"), objective_params(extra)],
                      sort_keys=True)


def merge_rows(earlier: list[dict[str, Any]], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``earlier`` without the rows that ``rows`` replace, then ``rows``."""
    replaced = {row_key(row) for row in rows}
    return [row for row in earlier if row_key(row) not in replaced] + rows


def markdown(rows: list[dict[str, Any]], paper: list[dict[str, Any]]) -> str:
    """The table: mean ± std rounded once from the row's values; columns that differ between rows only."""
    columns = ["method", "model", "ipc", "imbalance", "real pool", "params", "seed", "iterations", "accuracy",
               "head / tail classes", "n", "epochs", "build s"]
    table = []
    for row in rows:
        extra = row["extra"]
        labels = extra.get("labels", {})
        soft = f" (soft labels, {labels.get('relabel', 'fixed')})" if labels.get("labels") == "soft" else ""
        schedule = f" (lr {extra['lr_schedule']})" if "lr_schedule" in extra else ""
        elf = f" + {elf_label(extra)}" if extra.get("elf") else ""
        entry = {"method": row["method"] + schedule + elf + soft,
                 "model": row["model"],
                 "ipc": row["ipc"], "imbalance": extra.get("imbalance", ""),
                 "real pool": f"{extra['prune']} {extra['keep']:.0%}" if "prune" in extra else "full",
                 "params": objective_params(extra) or "default", "seed": extra.get("seed", 0),
                 "iterations": row["iterations"], "accuracy": f"{row['mean']:.1f} ± {row['std']:.1f}", "n": row["n"],
                 "epochs": row["epochs"], "build s": extra["build_seconds"]}
        if extra.get("imbalance"):
            entry["head / tail classes"] = "{:.1f} / {:.1f}".format(*head_tail(extra["per_class"]))
        table.append(entry)
    always = {"method", "ipc", "accuracy", "n"}
    shown = [c for c in columns if c in always or len({str(entry.get(c, "")) for entry in table}) > 1]
    md = markdown_table(table, shown)
    if paper:
        md += "\nPublished / reference numbers (not ours):\n\n" + markdown_table(
            [{**p, "accuracy": f"{p['mean']} ± {p.get('std', '?')}"} for p in paper],
            ["dataset", "method", "ipc", "accuracy", "source"])
    return md


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("table", type=Path, help="table config (benchmarks/tables/<name>.yaml)")
    parser.add_argument("--work", default="benchmarks/work", help="the workflow's work folder")
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--command", required=True, help="the command that made the table (recorded)")
    parser.add_argument("--merge", action="store_true",
                        help="collect the finished rows only and merge them into the existing result file")
    args = parser.parse_args()
    table = load_table(args.table)
    work = Path(args.work)
    rows = [result_row(row, work, args.work) for row in table.rows
            if not args.merge or all((work / model.path / "evaluation.json").is_file() for model in row.models)]
    seconds = sum(row["extra"]["build_seconds"] + row["extra"]["eval_seconds"] for row in rows)
    md = (table.description.strip() + "\n\n" if table.description else "")
    extra = None
    existing = args.results / f"{table.name}.json"
    if args.merge and existing.is_file():
        earlier = json.loads(existing.read_text())
        commands = list(dict.fromkeys([*earlier.get("commands", [earlier["command"]]), args.command]))
        rows = merge_rows(earlier["rows"], rows)
        seconds += earlier["wall_seconds"]
        extra = {"commands": commands}
        md += "Commands behind the rows:\n\n" + "".join(f"- `{command}`\n" for command in commands) + "\n"
    md += markdown(rows, table.paper)
    path = write_results(table.name, args.command, rows, table.paper, seconds, md, extra, results=args.results)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
