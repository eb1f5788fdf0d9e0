"""The teachers of the accuracy tables: their test accuracy and training cost (benchmarks/results/teachers.json).

    python benchmarks/teachers.py            # trains what is missing (resumable), then writes the result files
    python benchmarks/teachers.py --collect  # only writes the rows of the finished teachers

Every table config with a ``teacher:`` names one (benchmarks/plan.py ``TeacherSpec``); it is trained by the same
``distillset teacher train ... --out benchmarks/work/teachers/<name>`` command the Snakemake workflow runs, so a
teacher trained here is the one the tables use, and a stopped training continues from its checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from common import markdown_table, write_results
from plan import TeacherSpec, shell, tables

ROOT = Path(__file__).resolve().parents[1]


def teacher_specs() -> dict[str, TeacherSpec]:
    return {table.teacher.path: table.teacher for table in tables().values() if table.teacher is not None}


def row(spec: TeacherSpec, manifest: dict, command: str) -> dict:
    recipe = manifest["recipe"]
    return {"dataset": recipe["dataset"], "method": "teacher", "ipc": 0, "model": recipe["model"],
            "metric": "test_accuracy", "mean": manifest["test_accuracy"], "std": 0.0, "n": 1, "iterations": 0,
            "epochs": recipe["epochs"],
            "extra": {"recipe": recipe, "train_seconds": round(manifest["train_seconds"], 1),
                      "train_images": recipe["train_size"], "parameters": manifest["parameters"],
                      "sha256": manifest["sha256"], "folder": f"benchmarks/work/{spec.path}",
                      "runtime": manifest["runtime"], "per_class": manifest["per_class_accuracy"],
                      "command": command}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="benchmarks/work")
    parser.add_argument("--collect", action="store_true", help="do not train; write the finished teachers' rows")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    executable = str(Path(sys.executable).with_name("distillset"))
    rows, missing = [], []
    for path, spec in teacher_specs().items():
        command = shell(spec.argv(args.work), "distillset")
        manifest_path = ROOT / args.work / path / "manifest.json"
        if not manifest_path.is_file() and not args.collect:
            subprocess.run(shell(spec.argv(args.work), executable), shell=True, check=True, cwd=ROOT,
                           env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
        if manifest_path.is_file():
            rows.append(row(spec, json.loads(manifest_path.read_text()), command))
        else:
            missing.append(command)
    table = [{"dataset": r["dataset"], "model": r["model"], "recipe": f"{r['epochs']} epochs, "
              f"{'DSA' if r['extra']['recipe']['dsa'] else 'no aug.'}, {r['extra']['recipe']['precision']}, "
              f"{r['extra']['train_images']} images", "test accuracy": f"{r['mean']:.2f}",
              "train s": r["extra"]["train_seconds"]} for r in rows]
    md = markdown_table(table, ["dataset", "model", "recipe", "test accuracy", "train s"])
    md += ("\n`train s`: seconds of training (all epochs, resumed runs summed) on the recorded machine, which other "
           "jobs shared.\n")
    if missing:
        md += ("\nNot finished (`python benchmarks/teachers.py` trains them, continuing a stopped run):\n\n"
               + "\n".join(f"- `{c}`" for c in missing) + "\n")
    seconds = sum(r["extra"]["train_seconds"] for r in rows)
    command = "python benchmarks/teachers.py" + (" --collect" if args.collect else "")
    path = write_results("teachers", command, rows, [], seconds, md,
                         extra={"unfinished": missing})
    print(f"wrote {path} ({len(rows)} teachers, {len(missing)} unfinished)")


if __name__ == "__main__":
    main()
