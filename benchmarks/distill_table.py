"""Distillation accuracy tables (DM, HDD, IDM, CSDM, CFM, ...): ConvNet-3, full evaluation protocol.

    python benchmarks/distill_table.py --name dm_fashion_mnist --methods random dm hdd idm idm+hdd --ipc 10 50
Resumable at four levels: the distillation checkpoints every 100 iterations or 10 minutes (benchmarks/work/),
a finished set is stored under benchmarks/artifacts/, a model in training checkpoints every 2 minutes
(benchmarks/work/<table>/eval/), and each trained model's accuracy is kept under benchmarks/cells/.
``random`` is the class-balanced random real subset (the distillation's initialisation).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from common import Cells, markdown_table, objective_params, report_command, write_results
from distillset.coreset import select_coreset
from distillset.coreset.prune import PRUNE_RULES, prune_pool
from distillset.data.base import ImageSet
from distillset.engine import Distiller, config_for_method, run_together
from distillset.registry import parse_key_values
from table import WORK, Cell, claimed, finished_rows, run_table, save_set, set_saved, total_seconds

PAPER_FILE = Path(__file__).with_name("paper_numbers.json")
# Speed settings of the distillation (not part of a cell's identity: they must not change results;
# benchmarks/results/dm_speed.json and the DM rows against the reference check that they do not).
FAST = {"real_precision": "bf16", "compile": True}


def _config(cell: Cell):
    params = {k[6:]: v for k, v in cell.extra.items() if k.startswith("param_")}
    return config_for_method(cell.method, ipc=cell.ipc, iterations=cell.iterations, seed=cell.seed,
                             objective_params=params, real_precision=FAST["real_precision"],
                             compile=FAST["compile"])


def real_pool(cell: Cell, splits) -> ImageSet:
    """The real images a cell distils from: the training split, or its pruned pool (``--prune``)."""
    if "keep" not in cell.extra:
        return splits.train
    pool, _ = prune_pool(splits.train, splits.info, cell.extra["keep"], cell.extra["prune"], num_nets=1,
                         seed=cell.seed)
    return pool


def build(cell: Cell, splits, work: Path):
    if cell.method == "random":
        subset = select_coreset(splits, "random", cell.ipc, seed=cell.seed)
        return subset, {"method": "random"}
    distiller = Distiller(real_pool(cell, splits), splits.info, _config(cell), out_dir=work, progress=False)
    synthetic = distiller.run(resume=True)
    return synthetic, {**asdict(distiller.config), "build_seconds": round(distiller.elapsed, 1)}


def network_source(cell: Cell) -> str | None:
    """The method preset's network source (``random`` for DM-style, ``queue`` for IDM-style), None for the
    undistilled ``random`` baseline. Distilled cells with the same source and ``extra`` (imbalance, pruning
    rule and ratio, objective parameters) can share networks and the real pass (engine.run_together)."""
    return None if cell.method == "random" else _config(cell).network_source


def head_tail(per_class: Sequence[float]) -> tuple[float, float]:
    """Mean accuracy of the head and tail classes: the first and last third (rounded up) of the class order,
    which is the long-tailed builder's order from most to fewest training images."""
    third = math.ceil(len(per_class) / 3)
    return sum(per_class[:third]) / third, sum(per_class[-third:]) / third


def grouped_builder(name: str, cells: list[Cell], max_group: int = 4, reuse: Sequence[str] = ()):
    """``build``, except that a cell distilled from the same real data as other unfinished cells (same
    dataset, imbalance, pruned pool, seed, objective parameters and network source; any method or IPC, and
    for DM-style methods any iteration count) is distilled together with them in lockstep, sharing the
    networks (IDM: the queue's training) and the real-feature pass (engine.run_together: each set is exactly
    what it would be alone). All sets of the group are saved; each records the group and its share of the
    group's distillation time (the runs' checkpointed step times, so resumes across sessions all count). At
    most ``max_group`` sets are distilled together (a group's sets all finish at its end).
    Cells finished in a ``reuse`` table are left out of groups (run_table copies them)."""

    def group_of(cell: Cell) -> list[Cell]:
        return [other for other in cells if network_source(other) == network_source(cell)
                and other.dataset == cell.dataset and other.seed == cell.seed and other.extra == cell.extra
                and (network_source(cell) == "random" or other.iterations == cell.iterations)
                and not set_saved(name, other)
                and not any(Cells(table).get(other.key) for table in reuse)]

    def build_grouped(cell: Cell, splits, work: Path):
        others = [member for member in group_of(cell) if member != cell] if network_source(cell) else []
        with contextlib.ExitStack() as claims:  # run_table holds the cell's claim; members other workers
            group = [cell]                       # are building are left to them
            for member in others:
                if (len(group) < max_group and claims.enter_context(claimed(name, f"{member.key}.set"))
                        and not set_saved(name, member)):
                    group.append(member)
            if len(group) == 1:
                return build(cell, splits, work)
            real = real_pool(cell, splits)
            distillers = [Distiller(real, splits.info, _config(member), out_dir=WORK / name / member.key,
                                    progress=False) for member in group]
            print(f"[{name}] distilling together (one real pass): {', '.join(m.key for m in group)}", flush=True)
            sets = run_together(distillers, resume=True)
            # the runs' step times, checkpointed, so a group resumed over several sessions counts all of them
            seconds = sum(distiller.elapsed for distiller in distillers)
            keys = [m.key for m in group]
            for member, distiller, synthetic in zip(group, distillers, sets, strict=True):
                config = {**asdict(distiller.config), "distilled_with": keys, "group_seconds": round(seconds, 1)}
                save_set(name, member, synthetic, config, seconds / len(group))
            return sets[group.index(cell)], {}

    return build_grouped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True, help="result file name, e.g. dm_fashion_mnist")
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--methods", nargs="+", default=["random", "dm", "hdd", "idm", "idm+hdd"])
    parser.add_argument("--ipc", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--imbalance", type=float, nargs="*", default=[None])
    parser.add_argument("--param", action="append", default=[], help="objective key=value for every method")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="seeds, one cell each (the distillation's, and its models' as seed * 100 + model index), "
                             "to see how much a row moves with the distilled set")
    parser.add_argument("--prune", nargs="*", default=[], choices=PRUNE_RULES,
                        help="also distil from the real pool pruned by these rules (keeping --keep of each class)")
    parser.add_argument("--keep", type=float, default=0.2, help="fraction of the real pool kept when pruning")
    parser.add_argument("--models", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", help="evaluation training precision")
    parser.add_argument("--eval-compile", action="store_true", help="torch.compile the evaluated networks")
    parser.add_argument("--real-precision", default=FAST["real_precision"], choices=["fp32", "bf16"],
                        help="precision of the distillation's passes over real data (IDM: also queue training)")
    parser.add_argument("--no-compile", action="store_true", help="do not torch.compile the networks")
    parser.add_argument("--separately", action="store_true",
                        help="distil every cell on its own instead of sharing the real pass (engine.run_together) "
                             "between cells of the same real data")
    parser.add_argument("--reuse", nargs="*", default=[],
                        help="copy cells already finished in these tables (same key and evaluation), e.g. the "
                             "full-pool DM row of dm_fashion_mnist in the pruning table")
    parser.add_argument("--build-only", action="store_true",
                        help="distil the sets of unfinished cells and train no models (another worker may evaluate)")
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite the result files from the finished cells; build and train nothing")
    parser.add_argument("--max-group", type=int, default=4,
                        help="at most this many cells distilled together (a group's sets all finish at its end)")
    args = parser.parse_args()
    if args.max_group < 1:
        parser.error("--max-group must be >= 1")
    FAST.update(real_precision=args.real_precision, compile=not args.no_compile)
    try:
        extra_params = {f"param_{k}": v for k, v in parse_key_values(args.param).items()}
    except ValueError as exc:
        parser.error(f"--param {exc}")
    cells = []
    for seed, imbalance, ipc, method in itertools.product(args.seeds, args.imbalance, args.ipc, args.methods):
        extra = dict(extra_params)
        if imbalance is not None:
            extra["imbalance"] = imbalance
        iterations = 0 if method == "random" else args.iterations
        cells.append(Cell(args.dataset, method, ipc, iterations=iterations, seed=seed, extra=extra,
                          resample=method == "random"))
        if method != "random":
            cells += [Cell(args.dataset, method, ipc, iterations=iterations, seed=seed,
                           extra={**extra, "prune": rule, "keep": args.keep}) for rule in args.prune]
    start = time.perf_counter()
    paper = json.loads(PAPER_FILE.read_text()).get(args.name, []) if PAPER_FILE.is_file() else []

    def write(rows: list[dict]) -> None:
        rows = sorted(rows, key=lambda r: (r["extra"].get("imbalance") or 0, r["ipc"], r["method"],
                                           objective_params(r["extra"]), r["extra"].get("seed", 0)))
        table = [{"method": r["method"], "ipc": r["ipc"], "imbalance": r["extra"].get("imbalance", ""),
                  "real pool": f"{r['extra']['prune']} {r['extra']['keep']:.0%}" if "prune" in r["extra"] else "full",
                  "iterations": r["iterations"], "accuracy": f"{r['mean']:.1f} ± {r['std']:.1f}", "n": r["n"],
                  "distill s": r["extra"]["build_seconds"]} for r in rows]
        columns = ["method", "ipc", "imbalance", "real pool", "iterations", "accuracy", "n", "distill s"]

        def add_column(name: str, values: Sequence[Any], after: str) -> None:
            for entry, value in zip(table, values, strict=True):
                entry[name] = value
            columns.insert(columns.index(after) + 1, name)

        if any(r["extra"].get("imbalance") for r in rows):  # long-tailed: head vs tail classes
            add_column("head / tail classes", ["{:.1f} / {:.1f}".format(*head_tail(r["extra"]["per_class"]))
                                               for r in rows], after="accuracy")
        if any(r["extra"].get("seed", 0) for r in rows):  # rows repeated with other seeds (--seeds)
            add_column("seed", [r["extra"].get("seed", 0) for r in rows], after="real pool")
        if any(objective_params(r["extra"]) for r in rows):  # e.g. a CFM schedule variant beside the default
            add_column("params", [objective_params(r["extra"]) or "default" for r in rows], after="method")
        md = markdown_table(table, columns)
        if paper:
            md += "\nPublished / reference numbers (not ours):\n\n" + markdown_table(
                [{**p, "accuracy": f"{p['mean']} ± {p.get('std', '?')}"} for p in paper],
                ["dataset", "method", "ipc", "accuracy", "source"])
        wall = max(total_seconds(args.name), time.perf_counter() - start)
        write_results(args.name, report_command(args.name, args.report_only), rows, paper, wall, md)

    if args.report_only:
        write(finished_rows(args.name))
        return

    builder = build if args.separately else grouped_builder(args.name, cells, args.max_group, args.reuse)
    write(run_table(args.name, cells, builder, num_models=args.models, epochs=args.epochs, device=args.device,
                    precision=args.precision, compile=args.eval_compile, on_cell=write, reuse=args.reuse,
                    build_only=args.build_only))

if __name__ == "__main__":
    main()
