"""Distilled-set artifacts: safetensors tensors + a JSON manifest, written atomically.

Layout of a run directory::

    runs/x/
      synthetic.safetensors   images (N,C,H,W, normalised), labels (N,), optional soft_labels
      manifest.json           method, config, dataset, ipc, seed, versions, commit, wall time, sha256

The tensor file's header also carries a copy of every manifest field except ``tensors`` (safetensors metadata
``distillset-manifest``), so the sha256 in the manifest covers the whole manifest: loading recomputes the
sha256 of the tensor file, names every manifest field that differs from the saved copy, and checks the manifest
against the tensors (num_images, image_shape, ipc, labels within the dataset's classes). Who made a set is proved
only by a signature (:mod:`distillset.security.signing`); see docs/security.md. No pickle is used.
"""

from __future__ import annotations

import json
import platform
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from distillset import __version__
from distillset.data import dataset_info
from distillset.data.base import ImageSet
from distillset.io import ArtifactError, RunDir, atomic_save_tensors, atomic_write_json, sha256_file
from distillset.registry import UnknownNameError

MANIFEST_FORMAT = "distillset-run/1"
MANIFEST_COPY_KEY = "distillset-manifest"  # safetensors metadata key of the manifest copy
_MISSING = object()


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
    fields = {
        "format": MANIFEST_FORMAT,
        "method": method,
        "dataset": dataset,
        "ipc": int(ipc),
        "seed": int(seed),
        "num_images": len(synthetic),
        "image_shape": list(synthetic.images.shape[1:]),
        "config": dict(config),
        "wall_seconds": round(float(wall_seconds), 3),
        "environment": environment_info(),
        **(dict(extra) if extra else {}),
    }
    fields = json.loads(canonical_json(fields))  # exactly what a reader of manifest.json gets back
    check_consistency(fields, ImageSet(tensors["images"], tensors["labels"], tensors.get("soft_labels")))
    atomic_save_tensors(run.tensors, tensors, metadata={MANIFEST_COPY_KEY: canonical_json(fields)})
    manifest = {**fields, "tensors": {"file": run.tensors_name, "sha256": sha256_file(run.tensors)}}
    atomic_write_json(run.manifest, manifest)
    return run.manifest


def canonical_json(obj: Any) -> str:
    """One byte-exact JSON text per value (sorted keys, no spaces), used for the manifest copy and signatures."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)


def changed_fields(saved: Any, current: Any, prefix: str = "") -> list[str]:
    """Dotted paths of the entries that differ between two JSON values, e.g. ``['config.lr_img', 'ipc']``."""
    if isinstance(saved, dict) and isinstance(current, dict):
        return [path for key in sorted(set(saved) | set(current))
                for path in changed_fields(saved.get(key, _MISSING), current.get(key, _MISSING),
                                           f"{prefix}.{key}" if prefix else str(key))]
    return [] if saved == current else [prefix or "(whole value)"]


def describe_change(saved: Any, current: Any, path: str) -> str:
    """``"ipc: saved 10, now 50"`` for one path of :func:`changed_fields`."""
    def at(value: Any) -> Any:
        for key in path.split("."):
            value = value.get(key, _MISSING) if isinstance(value, dict) else _MISSING
        return "(absent)" if value is _MISSING else json.dumps(value, default=str)

    return f"{path}: saved {at(saved)}, now {at(current)}"


def check_consistency(manifest: Mapping[str, Any], synthetic: ImageSet) -> None:
    """Refuse a manifest that does not describe ``synthetic``: format, num_images, image_shape, dataset (its
    image shape and classes), ipc (the largest class has ipc images), the class shard and soft-label width."""
    problems: list[str] = []
    if manifest.get("format") != MANIFEST_FORMAT:
        problems.append(f"format is {manifest.get('format')!r}, expected {MANIFEST_FORMAT!r}")
    n, shape = len(synthetic), list(synthetic.images.shape[1:])
    if manifest.get("num_images") != n:
        problems.append(f"num_images is {manifest.get('num_images')!r} but the tensors hold {n} images")
    if manifest.get("image_shape") != shape:
        problems.append(f"image_shape is {manifest.get('image_shape')!r} but the images are {shape}")
    try:
        info = dataset_info(str(manifest.get("dataset")))
    except UnknownNameError:
        problems.append(f"dataset {manifest.get('dataset')!r} is not a registered dataset")
        info = None
    counts = torch.bincount(synthetic.labels) if n else torch.zeros(0, dtype=torch.long)
    if info is not None:
        if shape != [info.channels, *info.image_size]:
            problems.append(f"the images are {shape} but dataset {info.name!r} has {[info.channels, *info.image_size]}")
        if n and (int(synthetic.labels.min()) < 0 or len(counts) > info.num_classes):
            problems.append(f"labels run from {int(synthetic.labels.min())} to {len(counts) - 1}, outside the "
                            f"{info.num_classes} classes of {info.name!r}")
        if synthetic.soft_labels is not None and synthetic.soft_labels.shape[1:] != (info.num_classes,):
            problems.append(f"soft_labels have {tuple(synthetic.soft_labels.shape[1:])} columns per image, "
                            f"dataset {info.name!r} has {info.num_classes} classes")
    ipc = manifest.get("ipc")
    config = manifest.get("config")
    expansion = config.get("expansion_factor", 1) if isinstance(config, dict) else 1  # IDM: ipc x factor^2 images
    if n and (not isinstance(ipc, int) or not isinstance(expansion, int) or int(counts.max()) != ipc * expansion**2):
        expanded = f" (x {expansion}^2 expanded images)" if expansion != 1 else ""
        problems.append(f"ipc is {ipc!r}{expanded} but the largest class holds {int(counts.max())} images")
    shard = (manifest.get("config") or {}).get("classes") if isinstance(manifest.get("config"), dict) else None
    present = sorted(synthetic.labels.unique().tolist())
    if shard is not None and not set(present) <= set(shard):
        problems.append(f"config.classes is {shard} but the labels include {present}")
    if problems:
        raise ArtifactError("the manifest does not match the synthetic set: " + "; ".join(problems)
                            + ". The manifest was edited or belongs to another set; restore the original run folder.")


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
    """Load a run's synthetic set, refusing it if the tensor file's sha256 differs from the manifest, if a
    manifest field differs from the copy saved in the tensor file, or if the manifest does not describe the
    tensors (:func:`check_consistency`). ``verify=False`` skips all three (recovery and inspection only)."""
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
        with safe_open(tensor_path, framework="pt") as handle:
            saved_copy = (handle.metadata() or {}).get(MANIFEST_COPY_KEY)
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(f"{tensor_path} is not a readable safetensors file ({exc})") from exc
    for key in ("images", "labels"):
        if key not in tensors:
            raise ArtifactError(f"{tensor_path} has no '{key}' tensor")
    try:
        synthetic = ImageSet(tensors["images"].float(), tensors["labels"].long(), tensors.get("soft_labels"))
    except ValueError as exc:
        raise ArtifactError(f"{tensor_path}: {exc}") from exc
    if verify:
        if saved_copy is not None:
            check_manifest_copy(manifest, json.loads(saved_copy), RunDir(run_dir).manifest)
        check_consistency(manifest, synthetic)
    return synthetic, manifest


def check_manifest_copy(manifest: Mapping[str, Any], saved: Mapping[str, Any], path: Path) -> None:
    """Refuse a manifest whose fields (all but ``tensors``) differ from the copy saved with the tensors."""
    current = {key: value for key, value in manifest.items() if key != "tensors"}
    changes = changed_fields(saved, current)
    if changes:
        raise ArtifactError(
            f"{path} was edited after the set was saved: " + "; ".join(describe_change(saved, current, c)
                                                                       for c in changes)
            + ". Restore the original manifest (the saved values are in the tensor file's header)."
        )
