"""Carry unfinished benchmark work from one machine (or session) to the next through git.

``benchmarks/work/`` (distillation and training checkpoints) is git-ignored, so a fresh checkout starts every
unfinished set and model over. ``save`` copies the resumable state of the work in progress into
``benchmarks/carry/`` (committed); ``restore`` copies it back into ``benchmarks/work/`` where this machine has
no newer copy, so the tables resume instead of restarting:

    python benchmarks/carry.py save       # before committing at the end of a session (lanes may keep running)
    python benchmarks/carry.py restore    # on a fresh checkout, before the lanes start (cpu_lanes.sh does it)

Carried: distillation checkpoints (``<table>/<set key>/checkpoint.safetensors`` and its ``log.jsonl``) of sets
not yet saved under ``benchmarks/artifacts/``, and model trainings in progress (``<table>/eval/<model key>/``)
of models not yet recorded under ``benchmarks/cells/``. Not carried: claims (locks), and IDM's checkpoints:
each holds the network queue (about 2.5 MB per ConvNet-3 with its momentum, 69 networks by iteration 2000,
in every run of the lockstep group), hundreds of MB per session in git's history; nor any file over
``--max-mb`` (printed). Files are copied atomically, so ``save`` is safe while the lanes write checkpoints.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from safetensors import safe_open

from common import CELLS, ROOT
from table import ARTIFACTS, WORK

CARRY = ROOT / "carry"
CHECKPOINT = "checkpoint.safetensors"
DISTILLATION_FILES = (CHECKPOINT, "log.jsonl")


def _copy_atomic(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def _holds_network_queue(checkpoint: Path) -> bool:
    with safe_open(str(checkpoint), framework="pt") as handle:
        return any(key.startswith("queue.") for key in handle.keys())


def finished(folder: Path) -> bool:
    """Whether the run or training in ``folder`` (relative to ``benchmarks/work/``) has ended: its set is saved
    under ``benchmarks/artifacts/`` or its model recorded under ``benchmarks/cells/``."""
    table, *rest = folder.parts
    if rest[:1] == ["eval"]:
        return (CELLS / table / "models" / f"{rest[-1]}.json").is_file()
    return (ARTIFACTS / table / rest[-1] / "manifest.json").is_file()


def unfinished(work: Path = WORK) -> Iterator[tuple[Path, str]]:
    """(file, reason it is skipped or "") for each resumable file of work in progress under ``work``."""
    for table in sorted(p for p in work.iterdir() if p.is_dir()) if work.is_dir() else []:
        runs = [p for p in table.iterdir() if p.is_dir() and p.name not in ("claims", "eval")]
        for folder in sorted(runs) + sorted((table / "eval").glob("*/")):
            if finished(folder.relative_to(work)):
                continue  # a folder left over
            checkpoint = folder / CHECKPOINT
            if folder.parent.name != "eval" and not checkpoint.is_file():
                continue  # a distillation that has not checkpointed yet
            reason = "IDM network queue" if checkpoint.is_file() and _holds_network_queue(checkpoint) else ""
            names = DISTILLATION_FILES if folder.parent.name != "eval" else [
                p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
            for name in sorted(names):
                if (folder / name).is_file():
                    yield folder / name, reason


def save(max_mb: float) -> list[Path]:
    """Replace ``benchmarks/carry/`` with the resumable files of the work in progress; returns them."""
    staging = Path(tempfile.mkdtemp(dir=ROOT, prefix=".carry-"))
    carried = []
    by_folder: dict[Path, list[tuple[Path, str]]] = {}
    for path, reason in unfinished():
        size_mb = path.stat().st_size / 2**20
        by_folder.setdefault(path.parent, []).append(
            (path, reason or (f"{size_mb:.0f} MB > --max-mb {max_mb:g}" if size_mb > max_mb else "")))
    for folder, files in by_folder.items():  # a folder goes whole or not at all (a log without its checkpoint
        reasons = sorted({reason for _, reason in files if reason})  # would restart the run on a stale log)
        if reasons:
            print(f"not carried ({'; '.join(reasons)}): {folder.relative_to(WORK)}")
            continue
        for path, _ in files:
            _copy_atomic(path, staging / path.relative_to(WORK))
            carried.append(path.relative_to(WORK))
    here = {path.parent for path in carried}
    for folder in _carried_folders():  # carried before but never restored on this machine: keep them
        relative = folder.relative_to(CARRY)
        if relative not in here and not (WORK / relative).is_dir() and not finished(relative):
            shutil.copytree(folder, staging / relative)
            carried.extend(relative / p.name for p in folder.iterdir())
    if CARRY.exists():
        shutil.rmtree(CARRY)
    staging.rename(CARRY)
    for path in carried:
        print(f"carried: {path}")
    return carried


def _carried_folders() -> list[Path]:
    return sorted({p.parent for p in CARRY.rglob("*") if p.is_file()}) if CARRY.is_dir() else []


def restore() -> list[Path]:
    """Copy carried files into ``benchmarks/work/`` where this machine has no copy of that run or training
    (a run found here was continued here after it was carried, so it is newer); returns the files copied."""
    copied = []
    for folder in _carried_folders():
        target = WORK / folder.relative_to(CARRY)
        if finished(folder.relative_to(CARRY)):
            continue
        if target.is_dir() and any(target.iterdir()):
            print(f"kept (newer here): {target.relative_to(WORK)}")
            continue
        for path in sorted(p for p in folder.iterdir() if p.is_file()):
            _copy_atomic(path, target / path.name)
            copied.append(target.relative_to(WORK) / path.name)
            print(f"restored: {copied[-1]}")
    return copied


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["save", "restore"])
    parser.add_argument("--max-mb", type=float, default=16.0, help="carry no file larger than this (save)")
    args = parser.parse_args()
    save(args.max_mb) if args.action == "save" else restore()


if __name__ == "__main__":
    main()
