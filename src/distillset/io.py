"""Files on disk: atomic writes, hashing, the error classes of stored state, and the names of a run folder.

Every other layer writes through these helpers, so a reader never sees a half-written file: data goes to a
temp file in the same folder, is fsynced, and is renamed over the target (``os.replace`` is atomic).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file


class ArtifactError(RuntimeError):
    """A run directory (or another stored file) is missing, corrupt or has been tampered with."""


class CheckpointMismatchError(RuntimeError):
    """A checkpoint exists but was made with different settings."""


@dataclass(frozen=True)
class RunDir:
    """A run folder and the name of every file in it.

    ``distillset distill``/``coreset`` write the set (``tensors`` + ``manifest``), the distillation keeps its
    ``checkpoint`` and ``log`` beside it, ``distillset evaluate`` adds ``evaluation`` (and trains its models
    under ``evaluation_work``), ``distillset sign`` adds ``signature``; ``inspect``/``spectrum`` draw
    ``grid``/``spectrum``; ``demo`` writes ``report`` and ``summary``.
    """

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    tensors_name = "synthetic.safetensors"
    manifest_name = "manifest.json"

    @property
    def tensors(self) -> Path:
        return self.path / self.tensors_name

    @property
    def manifest(self) -> Path:
        return self.path / self.manifest_name

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint.safetensors"

    @property
    def log(self) -> Path:
        return self.path / "log.jsonl"

    @property
    def evaluation(self) -> Path:
        return self.path / "evaluation.json"

    @property
    def evaluation_work(self) -> Path:
        """Per-model training checkpoints of a resumable evaluation (removed once the results are written)."""
        return self.path / "evaluation-work"

    @property
    def signature(self) -> Path:
        return self.path / "signature.json"

    @property
    def grid(self) -> Path:
        return self.path / "grid.png"

    @property
    def spectrum(self) -> Path:
        return self.path / "spectrum.png"

    @property
    def report(self) -> Path:
        return self.path / "report.md"

    @property
    def summary(self) -> Path:
        return self.path / "summary.json"


def _publish(tmp: str, path: Path) -> None:
    """Give the temp file the permissions a plain ``open(path, "w")`` would (mkstemp makes it 0600), then
    rename it over ``path``."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file in the same folder and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        _publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(Path(path), (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def atomic_save_tensors(
    path: Path, tensors: Mapping[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> None:
    """safetensors ``save_file`` through a temp file + rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp, metadata=metadata)
        _publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
