"""Colour-biased Fashion-MNIST: random real images, DM and DM with KDE re-weighting by bias ratio rho.

    python benchmarks/biased_fashion_mnist.py                      # the full table (IPC 10, 50; 4 rho; 5 models)
    python benchmarks/biased_fashion_mnist.py --ipc 10 --rho 0.8,0.95,1.0 --iterations 200 --epochs 300 \
        --models 3 --batch-real 64                                 # a reduced scale (recorded in every row)
    python benchmarks/biased_fashion_mnist.py --report-only        # rewrite the result files from finished cells

Per (IPC, rho): the DM run's initial images are the ``random`` row (a uniform draw of real images per class), the
DM+KDE run's initial images the ``random-kde`` row (drawn with the KDE weights, 0 iterations: what re-weighting does
without matching), then ``dm`` and ``dm-kde`` after distillation. Every set is evaluated with
:func:`distillset.evaluate.evaluate_biased`: the row's ``mean`` is the unbiased accuracy (uniform colours), ``extra``
has the aligned / conflicting split (conflicting = the paper's rho = 0 test split). Resumable: distillations
checkpoint in ``--work``, each tested model is kept, each finished row is a cell in benchmarks/cells/<name>/.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from common import RESULTS, Cells, command_line, markdown_table, mean_std, write_results
from distillset.artifacts import load_run, save_run
from distillset.data import BiasedSplits, load_dataset
from distillset.engine import Distiller, config_for_method
from distillset.evaluate import EvalConfig, evaluate_biased
from distillset.training.teachers import make_recipe, train_teacher

NAME = "biased_fashion_mnist"
DATASET = "fashion-mnist-colour"
METHODS = ("random", "random-kde", "dm", "dm-kde")
SETUP_RECORD = ("debias", "debias_params", "conflicting_weight_share", "max_weight", "setup_seconds")
PAPER = [
    {"dataset": "cmnist", "method": "dm", "ipc": 50, "model": "convnet3", "metric": "accuracy", "mean": 23.8,
     "extra": {"rho": 0.95}, "source": "Cui et al., Mitigating Bias in Dataset Distillation, arXiv 2406.06609, "
                                       "abstract (CMNIST, 5 % bias-conflicting)"},
    {"dataset": "cmnist", "method": "dm + reweighting", "ipc": 50, "model": "convnet3", "metric": "accuracy",
     "mean": 91.5, "extra": {"rho": 0.95}, "source": "Cui et al., arXiv 2406.06609, abstract"},
]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ipc", default="10,50")
    parser.add_argument("--rho", default="0.1,0.8,0.95,1.0")
    parser.add_argument("--severity", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--batch-real", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--models", type=int, default=5)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--kde", nargs="*", default=[], metavar="KEY=VALUE", help="KDE settings (engine/debias.py)")
    parser.add_argument("--kde-teacher-epochs", type=int, default=0,
                        help="embed for KDE with a ConvNet-3 teacher of each biased set trained this many epochs "
                             "(no DSA; kept in --work/teachers); 0: the default random-network embedding")
    parser.add_argument("--work", type=Path, default=Path(__file__).parent / "work" / NAME)
    parser.add_argument("--cells", type=Path, default=None, help="cells root (default benchmarks/cells)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--only", default=",".join(METHODS), help="rows to produce (comma list of methods)")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    args.only = [name.strip() for name in args.only.split(",")]
    unknown = sorted(set(args.only) - set(METHODS))
    if unknown:
        parser.error(f"--only: unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    return args


def kde_params(items: list[str]) -> dict[str, Any]:
    from distillset.registry import parse_key_values

    return parse_key_values(items)


def scale_key(args: argparse.Namespace, evaluation: bool = True, models: bool = True) -> str:
    """The scale in a cell's key: distillation settings, and (``evaluation``) epochs and (``models``) models."""
    kde = "".join(f"-{item}" for item in sorted(args.kde))
    kde += f"-teacher-e{args.kde_teacher_epochs}" if args.kde_teacher_epochs else ""
    evaluated = f"-e{args.epochs}" + (f"-n{args.models}" if models else "") if evaluation else ""
    return f"it{args.iterations}-b{args.batch_real}{evaluated}-s{args.severity}{kde}"


def evaluate_row(cells: Cells, key: str, synthetic, splits: BiasedSplits, args: argparse.Namespace, method: str,
                 ipc: int, rho: float, iterations: int, extra: dict[str, Any]) -> None:
    if cells.get(key) is not None:
        return
    config = EvalConfig(epochs=args.epochs, num_models=args.models, precision=args.precision)
    start = time.perf_counter()
    # tested models are kept per set and scale, not per model count: a row with more models reuses them
    models = args.work / "eval" / f"ipc{ipc}-rho{rho}-{method}-{scale_key(args, models=False)}"
    result = evaluate_biased(synthetic, splits, config, checkpoint_dir=models)
    summary = result.to_dict()
    row = {
        "dataset": DATASET, "method": method, "ipc": ipc, "model": "convnet3", "metric": "accuracy",
        "mean": round(result.mean("unbiased"), 2), "std": round(result.std("unbiased"), 2), "n": args.models,
        "iterations": iterations, "epochs": args.epochs,
        "extra": {
            "rho": rho, "severity": args.severity, "accuracy": "unbiased = (aligned + 9 conflicting) / 10",
            "aligned": round(result.mean("aligned"), 2), "aligned_std": round(result.std("aligned"), 2),
            "conflicting": round(result.mean("conflicting"), 2),
            "conflicting_std": round(result.std("conflicting"), 2),
            "per_model": {group: summary[group]["values"] for group in ("unbiased", "aligned", "conflicting")},
            "batch_real": args.batch_real, "precision": config.resolved("cpu").precision,
            "eval_seconds": round(time.perf_counter() - start, 1), "command": command_line(), **extra,
        },
    }
    cells.put(key, row)
    print(f"{key}: unbiased {row['mean']} ± {row['std']}, aligned {row['extra']['aligned']}, "
          f"conflicting {row['extra']['conflicting']}", flush=True)


def weight_record(distiller: Distiller, splits: BiasedSplits) -> dict[str, Any]:
    """How much of the KDE weight sits on bias-conflicting images (their share of the images is 1 - rho)."""
    weights, conflicting = distiller.real_weights, ~splits.aligned_mask("train")
    return {"debias": "kde", "debias_params": distiller.config.debias_params,
            "conflicting_weight_share": round(float(weights[conflicting].sum() / weights.sum()), 4),
            "max_weight": round(float(weights.max()), 2)}


def kde_teacher(splits: BiasedSplits, args: argparse.Namespace, rho: float) -> dict[str, str]:
    """The KDE settings of ``--kde-teacher-epochs``: a teacher of this biased set (trained once, then reused)."""
    if not args.kde_teacher_epochs:
        return {}
    folder = args.work / "teachers" / f"rho{rho}-s{args.severity}-convnet3-e{args.kde_teacher_epochs}"
    recipe = make_recipe(splits, "convnet3", epochs=args.kde_teacher_epochs, dsa=False, precision=args.precision)
    teacher = train_teacher(splits, recipe, folder=folder, progress=True, compile=True)
    print(f"KDE teacher {folder}: test accuracy {teacher.test_accuracy:.2f} (rho = 0 test split)", flush=True)
    return {"embedding": "teacher", "teacher": str(folder)}


def run_cell(cells: Cells, splits: BiasedSplits, args: argparse.Namespace, ipc: int, rho: float) -> None:
    kde = {**kde_params(args.kde), **kde_teacher(splits, args, rho)} if any("kde" in m for m in args.only) else {}
    debias = {"-kde": ("kde", kde), "": ("none", {})}  # re-weighting first: the row in question
    for suffix, (method, params) in debias.items():
        keys = {name: f"ipc{ipc}-rho{rho}-{name}{suffix}-{scale_key(args)}" for name in ("random", "dm")}
        if all(cells.get(key) is not None for key in keys.values()):
            continue
        config = config_for_method("dm", ipc=ipc, iterations=args.iterations, batch_real=args.batch_real,
                                   real_precision=args.precision, debias=method, debias_params=params)
        run_dir = args.work / "sets" / f"ipc{ipc}-rho{rho}-dm{suffix}-{scale_key(args, evaluation=False)}"
        wanted = {name: f"{name}{suffix}" in args.only for name in ("random", "dm")}
        if not any(wanted.values()):
            continue
        random_row, saved = cells.get(keys["random"]), (run_dir / "manifest.json").is_file()
        distiller = None
        if (random_row is None and wanted["random"]) or (not saved and wanted["dm"]):  # weights: minutes on 60k
            start = time.perf_counter()
            distiller = Distiller(splits.train, splits.info, config, out_dir=run_dir)
            extra = {**(weight_record(distiller, splits) if method == "kde" else {}),
                     "setup_seconds": round(time.perf_counter() - start, 1)}
            if wanted["random"]:
                evaluate_row(cells, keys["random"], distiller.synthetic_set(), splits, args, f"random{suffix}", ipc,
                             rho, 0, extra)
        else:
            extra = {k: v for k, v in (random_row or {"extra": {}})["extra"].items() if k in SETUP_RECORD}
        if cells.get(keys["dm"]) is not None or not wanted["dm"]:
            continue
        if saved:
            synthetic, manifest = load_run(run_dir)
            seconds = manifest["wall_seconds"]
            extra = {**manifest.get("setup", {}), **extra}  # save_run keeps its extra fields at the top level
        else:
            assert distiller is not None
            synthetic = distiller.run(resume=True)
            seconds = distiller.elapsed
            save_run(run_dir, synthetic, method=f"dm{suffix}", dataset=DATASET, ipc=ipc, seed=0,
                     config=asdict(config), wall_seconds=seconds,
                     extra={"kind": "distilled", "bias": {"ratio": rho, "severity": args.severity}, "setup": extra})
        evaluate_row(cells, keys["dm"], synthetic, splits, args, f"dm{suffix}", ipc, rho, args.iterations,
                     {**extra, "distill_seconds": round(seconds, 1)})


def kde_settings(row: dict[str, Any]) -> str:
    """A row's KDE settings as a key (rows of other embeddings are other sets)."""
    return json.dumps(row["extra"].get("debias_params", {}), sort_keys=True)


def largest_runs(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per set and scale, the row with the most models (a rerun with more models reuses the earlier ones, so the
    smaller rows are subsets of it); set-up fields missing from it (KDE weight share: recorded where the weights
    were computed) are taken from the other rows of the same set."""
    def same_set(row: dict[str, Any]) -> tuple:
        extra = row["extra"]
        return (row["ipc"], extra["rho"], row["method"], row["iterations"], row["epochs"], extra["batch_real"],
                extra["severity"], kde_settings(row))
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(same_set(row), []).append(row)
    kept = []
    for group in groups.values():
        group.sort(key=lambda r: r["n"], reverse=True)
        best = group[0]
        for other in group[1:]:
            for key in SETUP_RECORD:
                if key in other["extra"]:
                    best["extra"].setdefault(key, other["extra"][key])
        kept.append(best)
    return kept


def report(cells: Cells, args: argparse.Namespace, wall: float) -> None:
    rows = sorted(largest_runs(cells.all()), key=lambda r: (r["ipc"], r["extra"]["rho"], METHODS.index(r["method"]),
                                                            r["iterations"], r["epochs"]))
    for row in rows:
        for key in ("key", "commit", "machine", "date"):
            row.pop(key, None)
        # the summary figures from the raw per-model accuracies, so a quoted figure is rounded once
        per_model = row["extra"]["per_model"]
        params = row["extra"].get("debias_params") or {}
        if "teacher" in params:  # the teacher's folder relative to the repository, not to this machine
            params["teacher"] = os.path.relpath(params["teacher"], Path(__file__).resolve().parent.parent)
        row["mean"], row["std"] = mean_std(per_model["unbiased"])
        for group in ("aligned", "conflicting"):
            row["extra"][group], row["extra"][f"{group}_std"] = mean_std(per_model[group])
    table = [{"IPC": r["ipc"], "rho": r["extra"]["rho"], "method": r["method"],
              "unbiased": f"{r['mean']:.1f} ± {r['std']:.1f}",
              "aligned": f"{r['extra']['aligned']:.1f} ± {r['extra']['aligned_std']:.1f}",
              "conflicting": f"{r['extra']['conflicting']:.1f} ± {r['extra']['conflicting_std']:.1f}",
              "conflicting weight": r["extra"].get("conflicting_weight_share", ""),
              "KDE embedding": (r["extra"].get("debias_params") or {}).get("embedding", "random")
              if "kde" in r["method"] else "",
              "iterations": r["iterations"], "batch_real": r["extra"]["batch_real"], "epochs": r["epochs"],
              "n": r["n"]} for r in rows]
    markdown = (
        "Colour-biased Fashion-MNIST (severity 2), ConvNet-3. `unbiased`: expected accuracy on uniformly coloured test "
        "images, (aligned + 9 conflicting) / 10; `conflicting`: the rho = 0 test split (every image another class's "
        "colour); `aligned`: the same images in their own class's colour. `conflicting weight`: share of the KDE "
        "weight on bias-conflicting training images (their share of images is 1 - rho). Scale per row (iterations, "
        "real batch, epochs, models); docs/biased.md.\n\n"
        + markdown_table(table, list(table[0]) if table else ["IPC"]))
    write_results(NAME, command_line(), rows, PAPER, max(wall, compute_seconds(rows)), markdown,
                  results=args.results)


def compute_seconds(rows: list[dict[str, Any]]) -> float:
    """The compute behind the rows as they record it: every evaluation, every distillation and each run's set-up
    (KDE weights) once; the wall time of a ``--report-only`` call is none of it."""
    setups = {(r["ipc"], r["extra"]["rho"], "kde" in r["method"], kde_settings(r)): r["extra"].get("setup_seconds", 0.0)
              for r in rows}
    return round(sum(r["extra"].get("eval_seconds", 0.0) + r["extra"].get("distill_seconds", 0.0) for r in rows)
                 + sum(setups.values()), 1)


def main() -> None:
    args = parse_args()
    cells = Cells(NAME, args.cells)
    start = time.perf_counter()
    if not args.report_only:
        for ipc in (int(v) for v in args.ipc.split(",")):
            for rho in (float(v) for v in args.rho.split(",")):
                splits = load_dataset(DATASET, bias_ratio=rho, severity=args.severity)
                run_cell(cells, splits, args, ipc, rho)
    report(cells, args, time.perf_counter() - start)


if __name__ == "__main__":
    main()
