"""Where the accuracy tables stand: distillations and model trainings in progress (with what a worker holds
right now), and the finished cells. Reads files only, so it is safe while the lanes run.

    python benchmarks/progress.py [TABLE ...]      # default: every table with a folder in benchmarks/work/
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

from safetensors import safe_open

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import CELLS  # noqa: E402
from table import ARTIFACTS, WORK  # noqa: E402

RECENT = 20  # log records (of 10 iterations each) behind the rate shown
GROUP_SPREAD = 10  # runs this close in iteration (one log interval) are taken as one lockstep group


def flocked_files() -> set[str]:
    """``major:minor:inode`` of every file someone holds a ``flock`` on, from /proc/locks (Linux). Read, not
    probed: taking a claim's lock even for an instant could make a worker skip the set or model it was about
    to claim."""
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError as exc:
        raise SystemExit(f"progress.py reads the held claims from /proc/locks (Linux): {exc}") from exc
    return {fields[5] for fields in map(str.split, lines) if len(fields) > 5 and fields[1] == "FLOCK"}


def held(table: str, what: str, flocked: set[str]) -> bool:
    """Whether a worker holds the claim on ``what`` now (``flocked``: :func:`flocked_files`)."""
    try:
        status = (WORK / table / "claims" / what).stat()
    except FileNotFoundError:
        return False
    return f"{os.major(status.st_dev):02x}:{os.minor(status.st_dev):02x}:{status.st_ino}" in flocked


def distillation(run: Path) -> tuple[int, int, float] | None:
    """``(iteration, target, seconds per iteration over the last RECENT records)`` from a run's log (None
    without one). A run of a lockstep group logs its own share of the group's time."""
    log = run / "log.jsonl"
    steps = [r for r in map(json.loads, log.read_text().splitlines()) if "seconds" in r] if log.is_file() else []
    if not steps or not steps[-1]["iteration"]:
        return None
    target = re.search(r"-it(\d+)", run.name)
    last, first = steps[-1], steps[max(len(steps) - RECENT, 0)]  # the recent rate: machines and loads change
    if first["iteration"] == last["iteration"]:
        first = {"iteration": 0, "seconds": 0.0}
    rate = (last["seconds"] - first["seconds"]) / (last["iteration"] - first["iteration"])
    return last["iteration"], int(target.group(1)) if target else 0, rate


def training(model_dir: Path) -> str:
    """``epoch e`` of the model checkpointed in ``model_dir`` (benchmarks/table.py's eval folder)."""
    for path in sorted(model_dir.glob("model*.safetensors")):
        with safe_open(path, framework="pt") as handle:
            metadata = handle.metadata() or {}
        return f"epoch {metadata.get('epoch', '?')}, {float(metadata.get('seconds', 0)) / 60:.0f} min so far"
    return "tested, not yet recorded" if any(model_dir.glob("model*.json")) else "starting"


def report(table: str) -> list[str]:
    lines = [f"{table}:"]
    flocked = flocked_files()
    work = WORK / table
    states = []
    for run in sorted(p for p in work.iterdir() if p.is_dir() and p.name not in ("claims", "eval")):
        state = None if (ARTIFACTS / table / run.name).is_dir() else distillation(run)  # saved: finished
        if state is not None:
            states.append((state[1], held(table, f"{run.name}.set", flocked), state[0], run.name, state[2]))
    # runs of one lockstep group: same target and status, iterations within one log interval (their logs are
    # written one after another, so a look in between sees them 10 apart)
    groups: list[tuple[int, int, bool, list[tuple[str, float]]]] = []
    for target, running, iteration, name, rate in sorted(states):
        last = groups[-1] if groups else None
        if last is None or (last[1], last[2]) != (target, running) or iteration - last[0] > GROUP_SPREAD:
            groups.append((iteration, target, running, []))
        groups[-1][3].append((name, rate))
    for iteration, target, running, runs in groups:
        rate = sum(r for _, r in runs)
        lines.append(f"  distilling {', '.join(name for name, _ in runs)}: iteration {iteration}/{target}, "
                     f"{rate:.1f} s/it, ~{max(target - iteration, 0) * rate / 3600:.1f} h left "
                     f"({'running' if running else 'stopped'})")
    for model_dir in sorted((work / "eval").glob("*")):
        running = "running" if held(table, f"{model_dir.name}.eval", flocked) else "stopped"
        lines.append(f"  training {model_dir.name}: {training(model_dir)} ({running})")
    cells = sorted(p.stem for p in (CELLS / table).glob("*.json"))
    models = len(list((CELLS / table / "models").glob("*.json")))
    lines.append(f"  {len(cells)} cells finished, {models} models recorded")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tables", nargs="*", help="table names (default: all in benchmarks/work/)")
    args = parser.parse_args()
    tables = args.tables or (sorted(p.name for p in WORK.iterdir() if (p / "claims").is_dir()) if WORK.is_dir() else [])
    for table in tables:
        if not (WORK / table).is_dir():
            parser.error(f"no work folder for table '{table}' (benchmarks/work/{table})")
        print("\n".join(report(table)))


if __name__ == "__main__":
    main()
