"""Resumable accuracy tables: each cell builds a set (coreset or distilled), then N models are trained
on it with the standard protocol. Finished sets, per-model accuracies and cells are kept, so a run that
stops is continued by running the same command again.

Several workers (processes, e.g. two one-thread lanes) may run the same table at once: a worker claims a
set before building it and a model before training it (an exclusive ``flock`` on a file under
``work/<table>/claims``, released by the kernel if the worker dies), and skips what another worker holds.
Whoever records a cell's last model writes the cell. A model's training is checkpointed under
``work/<table>/eval/`` (every 2 minutes), so a stopped worker resumes it instead of starting it over.

A cell with ``resample=True`` (the random real baseline) builds a new set for every model (set seed
``seed + index``), as the reference code draws a new random subset in each experiment: its std then
includes subset-to-subset variance, not only training noise."""

from __future__ import annotations

import contextlib
import fcntl
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from common import ROOT, Cells, command_line, mean_std
from distillset.artifacts import load_run, read_manifest, save_run
from distillset.data import load_dataset
from distillset.data.base import DatasetSplits, ImageSet
from distillset.evaluate import EvalConfig, evaluate_synthetic

ARTIFACTS = ROOT / "artifacts"
WORK = ROOT / "work"


@dataclass
class Cell:
    dataset: str
    method: str
    ipc: int
    model: str = "convnet3"
    iterations: int = 0
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    resample: bool = False  # a new set (seed + model index) for every evaluated model
    stored: bool = True  # whether the set is kept under benchmarks/artifacts/ (see set_cell)

    @property
    def key(self) -> str:
        tags = "".join(f"-{k}{v}" for k, v in sorted(self.extra.items()))
        return f"{self.dataset}-{self.method}-ipc{self.ipc}-it{self.iterations}-s{self.seed}{tags}" + (
            "-resampled" if self.resample else "")

    def set_cell(self, index: int) -> Cell:
        """The cell whose set model ``index`` is trained on. Of a resampled cell's sets (random real subsets,
        rebuilt from their seed at no cost) only the first is stored, for inspection and reports: storing all
        five IPC 50 subsets took 8 MB per table of the checkout, which a lent GPU receives whole (<= 64 MiB)."""
        if not self.resample:
            return self
        return replace(self, seed=self.seed + index, resample=False, stored=index == 0)


# A builder returns the set and the config recorded in its manifest; a config with ``build_seconds`` (e.g. a
# distillation's checkpointed compute time, which survives resumes) is recorded instead of this call's wall time.
SetBuilder = Callable[[Cell, DatasetSplits, Path], tuple[ImageSet, dict[str, Any]]]


def run_table(
    name: str,
    cells: list[Cell],
    build: SetBuilder,
    *,
    num_models: int,
    epochs: int,
    device: str = "cpu",
    precision: str = "fp32",
    compile: bool = False,
    data_root: Path | None = None,
    on_cell: Callable[[list[dict[str, Any]]], None] | None = None,
    reuse: Sequence[str] = (),
    build_only: bool = False,
) -> list[dict[str, Any]]:
    """Run every unfinished cell; returns all finished cells' rows (RESULTS.md format).

    ``build_only`` builds (distils) the sets of unfinished cells and trains no models, so one worker can get
    on with a long distillation while others evaluate.

    ``on_cell`` is called with the rows of all finished cells each time a cell finishes, so the result
    file can be rewritten as the table fills instead of only at the end of a run of many hours.
    A cell finished in one of the ``reuse`` tables (same key: same dataset, method, IPC, iterations, seed
    and settings) under the same evaluation is copied from there instead of being run again."""
    done = Cells(name)
    models = Cells(f"{name}/models")
    splits_cache: dict[tuple[str, Any], DatasetSplits] = {}
    evaluation = {"epochs": epochs, "n": num_models, "eval_precision": precision, "eval_compile": compile}
    for cell in cells:
        if done.get(cell.key) is not None:
            print(f"[{name}] {cell.key}: done, skipped", flush=True)
            continue
        if any(_copy_finished(table, cell, done, evaluation) for table in reuse):
            if on_cell is not None:
                on_cell(_rows(done))
            continue
        imbalance = cell.extra.get("imbalance")
        cache_key = (cell.dataset, imbalance, cell.seed if imbalance is not None else None)  # LT subset: seeded
        if cache_key not in splits_cache:
            splits_cache[cache_key] = load_dataset(cell.dataset, data_root, imbalance=imbalance, seed=cell.seed)
        splits = splits_cache[cache_key]
        build_seconds: dict[str, float] = {}  # per set of this cell (one, or one per model when resampled)
        model_keys = []
        try:
            for index in range(num_models):
                set_cell = cell.set_cell(index)
                if set_cell.key not in build_seconds:
                    synthetic, build_seconds[set_cell.key] = _load_or_build(name, set_cell, splits, build)
                if build_only:
                    continue
                model_key = f"{set_cell.key}-{cell.model}-e{epochs}-m{index}"
                model_keys.append(model_key)
                with claimed(name, f"{model_key}.eval") as mine:
                    if not mine or models.get(model_key) is not None:
                        continue
                    config = EvalConfig(model=cell.model, epochs=epochs, num_models=1, seed=cell.seed * 100 + index,
                                        precision=precision, compile=compile)
                    training = WORK / name / "eval" / model_key  # resumable: a stopped worker loses <= 2 min
                    result = evaluate_synthetic(synthetic, splits.test, splits.info, config, device=device,
                                                checkpoint_dir=training)
                    record = {"accuracy": result.mean, "per_class": result.per_class,
                              "train_seconds": result.models[0].train_seconds, "precision": precision,
                              "compile": compile}
                    models.put(model_key, record)
                    shutil.rmtree(training)
                print(f"[{name}] {model_key}: {record['accuracy']:.2f}% ({record['train_seconds']:.0f} s)", flush=True)
        except ClaimedElsewhere as busy:
            print(f"[{name}] {cell.key}: {busy}; skipped", flush=True)
            continue
        if build_only:
            print(f"[{name}] {cell.key}: set ready; models not trained (--build-only)", flush=True)
            continue
        records = [models.get(key) for key in model_keys]
        if any(record is None for record in records):
            print(f"[{name}] {cell.key}: models still being trained by another worker, which will write the cell",
                  flush=True)
            continue
        accuracies = [record["accuracy"] for record in records]
        machines = sorted({record["machine"] for record in records if "machine" in record})
        per_class = [record["per_class"] for record in records]
        train_seconds = [record["train_seconds"] for record in records]
        mean, std = mean_std(accuracies)
        per_class_mean = torch.tensor(per_class).mean(0).tolist()
        done.put(cell.key, {
            "row": {
                "dataset": cell.dataset, "method": cell.method, "ipc": cell.ipc, "model": cell.model,
                "metric": "test_accuracy", "mean": round(mean, 2), "std": round(std, 2), "n": num_models,
                "iterations": cell.iterations, "epochs": epochs,
                "extra": {**cell.extra, "seed": cell.seed, "accuracies": [round(a, 2) for a in accuracies],
                          "per_class": [round(a, 2) for a in per_class_mean], "accuracy_reported": "final_epoch",
                          "eval_precision": precision, "eval_compile": compile, "threads": torch.get_num_threads(),
                          "machines": machines,  # where its models were trained (a cell may span sessions)
                          "build_seconds": round(sum(build_seconds.values()), 1),
                          "eval_seconds": round(sum(train_seconds), 1),
                          **({"sets": "one per model (seed + model index)"} if cell.resample else {}),
                          "command": command_line()},
            },
            "seconds": sum(build_seconds.values()) + sum(train_seconds),
        })
        if on_cell is not None:
            on_cell(_rows(done))
    return _rows(done)


def _copy_finished(table: str, cell: Cell, done: Cells, evaluation: dict[str, Any]) -> bool:
    """Copy ``cell``'s finished record from ``table`` into ``done`` if it was evaluated the same way."""
    record = Cells(table).get(cell.key)
    if record is None or "row" not in record:
        return False
    row = record["row"]
    found = {"epochs": row["epochs"], "n": row["n"], "eval_precision": row["extra"].get("eval_precision", "fp32"),
             "eval_compile": row["extra"].get("eval_compile", False)}
    if found != evaluation:
        print(f"[{done.dir.name}] {cell.key}: not reused from {table} (evaluated with {found}, "
              f"this table uses {evaluation})", flush=True)
        return False
    extra = {**row["extra"], "reused_from": table, "reused_commit": record.get("commit")}
    done.put(cell.key, {"row": {**row, "extra": extra}, "seconds": 0.0})  # the compute is counted in ``table``
    print(f"[{done.dir.name}] {cell.key}: reused from {table}", flush=True)
    return True


def finished_rows(name: str) -> list[dict[str, Any]]:
    """The rows of every finished cell of table ``name``."""
    return _rows(Cells(name))


def _rows(done: Cells) -> list[dict[str, Any]]:
    return [c["row"] for c in done.all() if "row" in c]


class ClaimedElsewhere(Exception):
    """Another worker holds the claim on a set this worker needs."""


@contextlib.contextmanager
def claimed(name: str, what: str) -> Iterator[bool]:
    """Hold the claim on ``what`` (a set or model key plus a suffix) of table ``name`` while the block runs;
    yields False, holding nothing, when another worker holds it. The claim is an exclusive, non-blocking
    ``flock`` on ``work/<name>/claims/<what>``, so it ends when the block or the worker's process ends."""
    path = WORK / name / "claims" / what
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True


def _load_or_build(name: str, cell: Cell, splits: DatasetSplits, build: SetBuilder) -> tuple[ImageSet, float]:
    """The cell's set from its saved artifact, or built (and saved) now; with the seconds building took.
    A builder may save the sets it builds itself (several at once, :func:`save_set`). Raises
    :class:`ClaimedElsewhere` while another worker builds the set."""
    artifact = ARTIFACTS / name / cell.key
    if not cell.stored:
        start = time.perf_counter()
        synthetic, config = build(cell, splits, WORK / name / cell.key)
        return synthetic, config.get("build_seconds", time.perf_counter() - start)
    if not set_saved(name, cell):
        with claimed(name, f"{cell.key}.set") as mine:
            if not mine:
                raise ClaimedElsewhere(f"set {cell.key} is being built by another worker")
            if not set_saved(name, cell):  # (re-checked under the claim: another worker may just have saved it)
                start = time.perf_counter()
                synthetic, config = build(cell, splits, WORK / name / cell.key)
                if not set_saved(name, cell):
                    save_set(name, cell, synthetic, config, config.get("build_seconds", time.perf_counter() - start))
                return synthetic, read_manifest(artifact)["wall_seconds"]
    synthetic, manifest = load_run(artifact)
    return synthetic, manifest["wall_seconds"]


def set_saved(name: str, cell: Cell) -> bool:
    return (ARTIFACTS / name / cell.key / "manifest.json").is_file()


def save_set(name: str, cell: Cell, synthetic: ImageSet, config: dict[str, Any], seconds: float) -> None:
    """Store a finished set under ``benchmarks/artifacts/<name>/<cell key>``."""
    save_run(ARTIFACTS / name / cell.key, synthetic, method=cell.method, dataset=cell.dataset, ipc=cell.ipc,
             seed=cell.seed, config=config, wall_seconds=seconds, extra={"cell": cell.key})
    print(f"[{name}] {cell.key}: set ready ({len(synthetic)} images, {seconds:.0f} s)", flush=True)


def total_seconds(name: str) -> float:
    return sum(c.get("seconds", 0.0) for c in Cells(name).all())
