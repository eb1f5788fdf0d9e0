"""Datasets: a registry of the standard image-classification sets and their long-tailed variants.

>>> splits = load_dataset("fashion-mnist")                      # doctest: +SKIP
>>> splits = load_dataset("cifar10-lt", "data/", imbalance=0.01)  # doctest: +SKIP

Images come back as contiguous float32 ``(N, C, H, W)`` tensors, scaled to [0, 1] and then
normalised with the dataset's mean/std (:class:`DatasetInfo`); labels are int64. See
docs/datasets.md for the on-disk layouts and where to get each set.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from distillset.data.base import DatasetInfo, DatasetSplits, ImageSet
from distillset.data.biased import BiasedSplits, BiasSetting, check_bias_ratio, check_severity, make_biased_arrays
from distillset.data.longtail import check_imbalance, long_tail_counts, make_long_tailed
from distillset.data.registry import DATASETS, DatasetNotFoundError, DatasetSpec, RawSplits, locate, probe


def dataset_info(name: str) -> DatasetInfo:
    """Static description of a registered dataset (no I/O).

    For ``imagefolder`` ``num_classes`` is 0 and ``class_names`` empty: both come from disk on load.
    """
    return DATASETS.get(name).info


def dataset_names() -> list[str]:
    """Canonical names of all registered datasets (aliases such as ``fmnist`` left out)."""
    return sorted({DATASETS.get(key).info.name for key in DATASETS.names()})


def available_datasets(root: str | Path | None = None) -> list[tuple[str, bool, str]]:
    """``(name, found locally, where it was found or looked)`` for every registered dataset."""
    return [(name, *probe(DATASETS.get(name), root)) for name in dataset_names()]


def load_dataset(
    name: str,
    root: str | Path | None = None,
    *,
    imbalance: float | None = None,
    seed: int = 0,
    image_size: int | tuple[int, int] | None = None,
    bias_ratio: float | None = None,
    severity: int = 2,
) -> DatasetSplits:
    """Load a registered dataset's train and test splits.

    ``root``: folder holding the data (or its usual sub-folder, e.g. ``cifar-10-batches-py``);
    without it only the dataset's default location is searched (the Debian path for
    (Fashion-)MNIST). ``imbalance``: tail/head ratio in (0, 1], required for ``*-lt`` names and
    rejected for balanced ones. ``seed`` picks which training images a long-tailed set keeps.
    ``image_size``: output size for datasets decoded from image files (ImageFolder family,
    Tiny-ImageNet); default the registered size. ``bias_ratio`` (required for biased names such as
    ``fashion-mnist-colour``, rejected otherwise): the bias-aligned fraction of each training class, with bias
    ``severity`` 1..4; those return :class:`~distillset.data.biased.BiasedSplits` (docs/biased.md).
    """
    spec = DATASETS.get(name)
    _check_imbalance_argument(spec, imbalance)
    _check_bias_argument(spec, bias_ratio, severity)
    info = _info_with_size(spec, image_size)
    directory = locate(spec, root)
    raw = spec.read(directory, info.image_size)
    info = _info_with_classes(info, raw.class_names, directory)
    if spec.bias:
        return _biased_splits(spec, raw, info, directory, bias_ratio, severity)
    train = _to_image_set(raw.train_images, raw.train_labels, info, f"{directory} (train split)")
    test = _to_image_set(raw.test_images, raw.test_labels, info, f"{directory} (test split)")
    if spec.long_tailed:
        assert imbalance is not None  # checked above
        train = make_long_tailed(train, info.num_classes, imbalance, seed)
    return DatasetSplits(info, train, test)


def _check_imbalance_argument(spec: DatasetSpec, imbalance: float | None) -> None:
    name = spec.info.name
    if spec.long_tailed and imbalance is None:
        raise ValueError(
            f"'{name}' is long-tailed: pass imbalance=rho in (0, 1], the tail/head image ratio "
            "(e.g. 0.01 for imbalance factor 100, 0.005 for 200)"
        )
    if not spec.long_tailed and imbalance is not None:
        raise ValueError(
            f"imbalance={imbalance} was given for the balanced dataset '{name}'; "
            f"load '{name}-lt' for its long-tailed version"
        )
    if imbalance is not None:
        check_imbalance(imbalance)


def _check_bias_argument(spec: DatasetSpec, bias_ratio: float | None, severity: int) -> None:
    if spec.bias and bias_ratio is None:
        raise ValueError(f"'{spec.info.name}' is biased: pass bias_ratio=rho in [0, 1], the bias-aligned fraction "
                         "of each class (0.1 unbiased, 0.95 leaves 5 % bias-conflicting images; command line: "
                         "--bias-ratio)")
    if not spec.bias and bias_ratio is not None:
        biased = [name for name in dataset_names() if DATASETS.get(name).bias]
        raise ValueError(f"bias_ratio={bias_ratio} was given for '{spec.info.name}', which has no bias; load one of "
                         f"{', '.join(biased)}")
    if bias_ratio is not None:
        check_bias_ratio(bias_ratio)
        check_severity(severity)


def _biased_splits(spec: DatasetSpec, raw: RawSplits, info: DatasetInfo, directory: Path,
                   bias_ratio: float | None, severity: int) -> BiasedSplits:
    """Apply the spec's bias to the raw uint8 splits (:func:`make_biased_arrays`), then scale and normalise."""
    assert bias_ratio is not None  # checked by _check_bias_argument
    arrays = make_biased_arrays(spec.bias, raw.train_images, raw.train_labels, raw.test_images, raw.test_labels,
                                bias_ratio, severity)
    train = _to_image_set(arrays.train_images, raw.train_labels, info, f"{directory} (biased train split)")
    test = _to_image_set(arrays.test_images, raw.test_labels, info, f"{directory} (biased test split)")
    aligned = _to_image_set(arrays.aligned_test_images, raw.test_labels, info, f"{directory} (aligned test split)")
    return BiasedSplits(info, train, test, torch.from_numpy(arrays.train_attributes),
                        torch.from_numpy(arrays.test_attributes), aligned,
                        BiasSetting(spec.bias, float(bias_ratio), int(severity)))


def _info_with_size(spec: DatasetSpec, image_size: int | tuple[int, int] | None) -> DatasetInfo:
    if image_size is None:
        return spec.info
    if not spec.resizable:
        resizable = [name for name in dataset_names() if DATASETS.get(name).resizable]
        raise ValueError(
            f"'{spec.info.name}' has a fixed image size {spec.info.image_size}; image_size applies only to "
            f"datasets decoded from image files: {', '.join(resizable)}"
        )
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"image_size must be a positive int or (height, width), got {image_size!r}")
    return replace(spec.info, image_size=(int(size[0]), int(size[1])))


def _info_with_classes(info: DatasetInfo, class_names: tuple[str, ...], directory: Path) -> DatasetInfo:
    """Adopt class names read from disk; their number must match the registered class count."""
    if not class_names:
        return info
    if info.num_classes and len(class_names) != info.num_classes:
        raise ValueError(
            f"{directory}: found {len(class_names)} classes but '{info.name}' has {info.num_classes}; "
            "is root pointing at the right dataset?"
        )
    return replace(info, num_classes=len(class_names), class_names=class_names)


def _to_image_set(images: np.ndarray, labels: np.ndarray, info: DatasetInfo, source: str) -> ImageSet:
    """Check shapes and label range, then scale to [0, 1] and normalise with the dataset mean/std."""
    expected = (info.channels, *info.image_size)
    if images.shape[1:] != expected:
        raise ValueError(f"{source}: images have shape {images.shape[1:]}, '{info.name}' expects {expected}")
    if len(labels) and (labels.min() < 0 or labels.max() >= info.num_classes):
        raise ValueError(
            f"{source}: labels span {labels.min()}..{labels.max()}, '{info.name}' has classes 0..{info.num_classes - 1}"
        )
    if images.dtype == np.uint8:
        scale = 255.0
    elif np.issubdtype(images.dtype, np.floating):
        scale = 1.0
    else:
        raise TypeError(f"{source}: images must be uint8 or float in [0, 1], got {images.dtype}")
    # info.normalize(images / scale), computed in place: a 60k-image set converts in ~0.2 s, not ~1.4 s
    tensor = torch.tensor(images, dtype=torch.float32)
    mean = torch.tensor(info.mean, dtype=torch.float32).view(1, -1, 1, 1) * scale
    std = torch.tensor(info.std, dtype=torch.float32).view(1, -1, 1, 1) * scale
    return ImageSet(tensor.sub_(mean).div_(std), torch.from_numpy(labels.astype(np.int64)))

__all__ = [
    "DATASETS",
    "BiasedSplits",
    "DatasetInfo",
    "DatasetNotFoundError",
    "DatasetSplits",
    "ImageSet",
    "available_datasets",
    "dataset_info",
    "dataset_names",
    "load_dataset",
    "long_tail_counts",
    "make_long_tailed",
]
