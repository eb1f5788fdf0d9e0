"""A run folder's evaluation records: ``evaluation.json`` holds one entry per evaluation setting (its key), and
``evaluation-work/<key>/`` the resumable state of the one being trained (removed once its entry is written)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from distillset.io import ArtifactError, RunDir, atomic_write_json


def evaluation_key(model: str, epochs: int, num_models: int, seed: int, *, protocol: str = "", elf: bool = False,
                   precision: str = "fp32", suffix: str = "") -> str:
    """The key of one evaluation setting, e.g. ``convnet3-e1000-n5-s0-bf16``: ``protocol`` prefixes another
    protocol (``minimax``), ``elf`` and a precision other than fp32 are marked, ``suffix`` ends it (soft labels,
    image size)."""
    parts = [protocol, f"{model}-e{epochs}-n{num_models}-s{seed}", "elf" if elf else "",
             precision if precision != "fp32" else "", suffix]
    return "-".join(part for part in parts if part)


class EvaluationRecords:
    """The finished evaluations of a run folder (read once, written atomically after each new entry)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run = RunDir(run_dir)
        path = self.run.evaluation
        try:
            self.entries: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"{path} is unreadable ({exc}); move it away to evaluate again") from exc
        if not isinstance(self.entries, dict):
            raise ArtifactError(f"{path} must hold a JSON object of evaluation entries; move it away to evaluate again")

    def get(self, key: str) -> dict[str, Any] | None:
        """The recorded entry of ``key``, or None when that evaluation has not finished."""
        return self.entries.get(key)

    def work_dir(self, key: str) -> Path:
        """Where the models of ``key`` train (checkpoints and tested models; a rerun resumes from them)."""
        return self.run.evaluation_work / key

    def record(self, key: str, entry: dict[str, Any]) -> None:
        """Write ``entry`` under ``key`` and drop that evaluation's training state."""
        self.entries[key] = entry
        atomic_write_json(self.run.evaluation, self.entries)
        shutil.rmtree(self.work_dir(key), ignore_errors=True)
