"""Disk-backed real images: a training split written once as a float32 ``.npy`` file and memory-mapped.

Distillation reads a few hundred images of a class per step; with the images memory-mapped only the pages of
those images are read (and kept by the OS page cache while memory allows), so a dataset larger than RAM can be
distilled and the processes of a torchrun job on one node share one copy instead of holding one each. The
file keeps the split's image order (a class's images are found through the labels, held in memory), so a run
gives the same result from the file as from memory. Files are named by a hash of the split's contents: a
changed split (another imbalance seed, a pruned pool) gets its own file.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from distillset.data.base import ImageSet

CACHE_LIMIT_BYTES = 2 << 30  # below this a split is held in memory by default (``--cache`` auto)


def fingerprint(images: ImageSet) -> str:
    """SHA-256 (first 16 hex digits) of the images' and labels' bytes, shapes and dtype."""
    digest = hashlib.sha256()
    for tensor in (images.images, images.labels):
        array = np.ascontiguousarray(tensor.numpy())
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()[:16]


def array_path(images: ImageSet, directory: str | Path) -> Path:
    """Where :func:`write_array` puts ``images`` inside ``directory``."""
    return Path(directory) / f"images-{fingerprint(images)}.npy"


def write_array(images: ImageSet, directory: str | Path) -> Path:
    """Write the images to their ``.npy`` file (atomically; kept if it exists already); returns its path."""
    path = array_path(images, directory)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.save(handle, images.images.numpy().astype(np.float32, copy=False))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def open_array(path: str | Path, labels: torch.Tensor) -> ImageSet:
    """The images of ``path`` memory-mapped (copy-on-write: nothing is written back) with ``labels``."""
    try:
        images = np.load(path, mmap_mode="c")
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} is not a readable image array ({exc}); delete it and run again") from None
    if images.ndim != 4 or len(images) != len(labels):
        raise ValueError(f"{path} holds {images.shape} images for {len(labels)} labels; delete it and run again")
    return ImageSet(torch.from_numpy(images), labels)


def should_cache(images: ImageSet, cache: bool | None) -> bool:
    """``cache`` as given, or (None) whether the images are below :data:`CACHE_LIMIT_BYTES`."""
    if cache is not None:
        return cache
    return images.images.element_size() * images.images.nelement() < CACHE_LIMIT_BYTES
