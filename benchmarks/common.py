"""Shared benchmark plumbing: the result format (benchmarks/README.md) and finished records of the speed scripts.

Result files: ``benchmarks/results/<name>.json`` + ``.md``. The speed and SVR scripts keep each finished
measurement in ``benchmarks/cells/<name>/<key>.json`` (:class:`Cells`), so a rerun skips what is done.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from distillset.runtime import keep_large_allocations

keep_large_allocations()
ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
CELLS = ROOT / "cells"


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def git_commit() -> str:
    """HEAD of this checkout, or ``$BENCH_COMMIT`` where that is set (a copy without .git, e.g. a GPU box)."""
    if os.environ.get("BENCH_COMMIT"):
        return os.environ["BENCH_COMMIT"]
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine() -> str:
    """CPU model (or GPU name), core count and torch version."""
    cpu = platform.processor() or "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    parts = [cpu, f"{os.cpu_count()} cores"]
    try:
        import torch

        if torch.cuda.is_available():
            parts.insert(0, torch.cuda.get_device_name(0))
        parts.append(f"torch {torch.__version__}")
    except ImportError:
        pass
    return ", ".join(parts)


def command_line() -> str:
    return " ".join(["python", os.path.relpath(sys.argv[0], ROOT.parent), *sys.argv[1:]])


class Cells:
    """Finished cells of one benchmark, one JSON file each."""

    def __init__(self, name: str, root: Path | None = None) -> None:
        self.dir = (root or CELLS) / name

    @staticmethod
    def _file(key: str) -> str:
        return re.sub(r"[^A-Za-z0-9._+-]", "_", key) + ".json"

    def get(self, key: str) -> dict[str, Any] | None:
        path = self.dir / self._file(key)
        return json.loads(path.read_text()) if path.is_file() else None

    def put(self, key: str, value: dict[str, Any]) -> None:
        value = {**value, "key": key, "commit": git_commit(), "machine": machine(),
                 "date": _dt.date.today().isoformat()}
        _atomic_write_text(self.dir / self._file(key), json.dumps(value, indent=2, sort_keys=True) + "\n")

    def computed(self, key: str, compute: Callable[[], Any], label: str) -> dict[str, Any]:
        """The cell ``key``: read back when finished, else ``{"per_rep": compute(), "seconds": ...}`` stored first
        (a rerun skips it); prints ``[label] key`` with its seconds or that it was skipped."""
        cell = self.get(key)
        if cell is not None:
            print(f"[{label}] {key}: done, skipped", flush=True)
            return cell
        start = time.perf_counter()
        self.put(key, {"per_rep": compute(), "seconds": time.perf_counter() - start})
        cell = self.get(key)
        print(f"[{label}] {key}: {cell['seconds']:.0f} s", flush=True)
        return cell

    def all(self) -> list[dict[str, Any]]:
        if not self.dir.is_dir():
            return []
        return [json.loads(p.read_text()) for p in sorted(self.dir.glob("*.json"))]


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(c, "")) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def write_results(
    name: str,
    command: str,
    rows: list[dict[str, Any]],
    paper: list[dict[str, Any]],
    wall_seconds: float,
    markdown: str | None = None,
    extra: dict[str, Any] | None = None,
    results: Path = RESULTS,
) -> Path:
    """Write ``<results>/<name>.json`` (format: benchmarks/README.md) and an optional ``.md``."""
    payload = {
        "benchmark": name,
        "command": command,
        "commit": git_commit(),
        "machine": machine(),
        "date": _dt.date.today().isoformat(),
        "wall_seconds": round(float(wall_seconds), 1),
        "rows": rows,
        "paper": paper,
        **(extra or {}),
    }
    path = results / f"{name}.json"
    _atomic_write_text(path, json.dumps(payload, indent=2) + "\n")
    if markdown is not None:
        header = (f"# {name}\n\nCommand: `{command}`  \nCommit: `{payload['commit']}`  \n"
                  f"Machine: {payload['machine']}  \nWall time: {payload['wall_seconds']} s\n\n")
        _atomic_write_text(results / f"{name}.md", header + markdown)
    return path


def objective_params(extra: dict[str, Any]) -> str:
    """A row's objective parameters (``--param``, kept as ``param_<key>`` in its ``extra``), e.g.
    ``schedule_over=slots, scale=200``; "" for none."""
    return ", ".join(f"{k[len('param_'):]}={v}" for k, v in sorted(extra.items()) if k.startswith("param_"))


ELF_DEFAULTS = {"feature_loss": "ce", "feature_target": "raw", "lambda_front": 1, "lambda_rear": 1}


def elf_label(extra: dict[str, Any]) -> str:
    """A row's ELF setting: "" without ELF, else ``ELF`` and its loss settings that differ from ELFConfig's
    defaults, e.g. ``ELF (feature_target=normalized, lambda_front=0)``."""
    if not extra.get("elf"):
        return ""
    config = extra.get("elf_config", {})
    settings = ", ".join(f"{k}={config[k]}" for k, default in ELF_DEFAULTS.items()
                         if k in config and config[k] != default)
    return f"ELF ({settings})" if settings else "ELF"


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """Mean and population std (``np.std``, as the reference code reports)."""
    values = list(values)
    mean = sum(values) / len(values)
    return mean, (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5
