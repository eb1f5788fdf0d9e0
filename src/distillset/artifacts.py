"""Distilled-set artifacts: safetensors tensors + a JSON manifest, written atomically.

Layout of a run directory::

    runs/x/
      synthetic.safetensors   images (N,C,H,W, normalised), labels (N,), optional soft_labels
      manifest.json           method, config, dataset, ipc, seed, versions, commit, wall time, sha256

Loading recomputes the sha256 of the tensor file and refuses a mismatch. No pickle is used.
"""

from __future__ import annotations

import json
import platform
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from distillset import __version__
from distillset.data.base import ImageSet
from distillset.io import ArtifactError, RunDir, atomic_save_tensors, atomic_write_json, sha256_file


def git_commit(cwd: Path | None = None) -> str | None:
    """The commit of the source tree the package runs from, if it is a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd or Path(__file__).resolve().parent,
            capture_output=True, text=True, timeout=5, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def environment_info() -> dict[str, Any]:
    return {
        "distillset": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": git_commit(),
    }


def save_run(
    out_dir: str | Path,
    synthetic: ImageSet,
    *,
    method: str,
    dataset: str,
    ipc: int,
    seed: int,
    config: Mapping[str, Any],
    wall_seconds: float,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Save a synthetic set and its manifest into ``out_dir``; returns the manifest path."""
    run = RunDir(out_dir)
    tensors = {"images": synthetic.images.float(), "labels": synthetic.labels.long()}
    if synthetic.soft_labels is not None:
        tensors["soft_labels"] = synthetic.soft_labels.float()
    atomic_save_tensors(run.tensors, tensors)
    manifest = {
        "format": "distillset-run/1",
        "method": method,
        "dataset": dataset,
        "ipc": int(ipc),
        "seed": int(seed),
        "num_images": len(synthetic),
        "image_shape": list(synthetic.images.shape[1:]),
        "config": dict(config),
        "wall_seconds": round(float(wall_seconds), 3),
        "environment": environment_info(),
        "tensors": {"file": run.tensors_name, "sha256": sha256_file(run.tensors)},
        **(dict(extra) if extra else {}),
    }
    atomic_write_json(run.manifest, manifest)
    return run.manifest


def read_manifest(run_dir: str | Path) -> dict[str, Any]:
    path = RunDir(run_dir).manifest
    if not path.is_file():
        raise ArtifactError(
            f"no {path.name} in {run_dir}: not a distillset run directory "
            "(create one with `distillset distill` or `distillset coreset`)"
        )
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path} is not valid JSON ({exc}); the run directory is corrupt") from exc
    if not isinstance(manifest, dict) or "tensors" not in manifest:
        raise ArtifactError(f"{path} lacks the 'tensors' entry; the run directory is corrupt")
    return manifest


def load_run(run_dir: str | Path, *, verify: bool = True) -> tuple[ImageSet, dict[str, Any]]:
    """Load a run's synthetic set, refusing it if the tensor file's sha256 differs from the manifest."""
    manifest = read_manifest(run_dir)
    tensor_path = Path(run_dir) / manifest["tensors"]["file"]
    if tensor_path.name != manifest["tensors"]["file"] or not tensor_path.is_file():
        raise ArtifactError(f"tensor file {tensor_path} named in the manifest is missing")
    if verify:
        actual = sha256_file(tensor_path)
        expected = manifest["tensors"].get("sha256")
        if actual != expected:
            raise ArtifactError(
                f"sha256 mismatch for {tensor_path}: manifest says {expected}, file is {actual}. "
                "The synthetic set was modified or corrupted after it was saved; re-create it or "
                "restore the original file (do not use it for training)."
            )
    try:
        tensors = load_file(tensor_path)
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(f"{tensor_path} is not a readable safetensors file ({exc})") from exc
    for key in ("images", "labels"):
        if key not in tensors:
            raise ArtifactError(f"{tensor_path} has no '{key}' tensor")
    try:
        synthetic = ImageSet(tensors["images"].float(), tensors["labels"].long(), tensors.get("soft_labels"))
    except ValueError as exc:
        raise ArtifactError(f"{tensor_path}: {exc}") from exc
    return synthetic, manifest
