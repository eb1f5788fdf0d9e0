"""Long-tailed training sets with the exponential profile of Cao et al. (2019, LDAM-DRW).

Class ``c`` (0-based, head first) keeps ``n_c = max(1, floor(n_max * rho ** (c / (C - 1))))``
images, with imbalance ratio ``rho = n_min / n_max`` in (0, 1] (the "imbalance factor" of the
LT literature is ``1 / rho``: CIFAR-10-LT with IF 100 has ``rho = 0.01``, head 5000, tail 50).
This is the construction the CSDM notes (section 6) assume for CIFAR-10/100-LT.
"""

from __future__ import annotations

import math

import torch

from distillset.data.base import ImageSet


def check_imbalance(imbalance: float) -> float:
    """Return ``imbalance`` as a float if it lies in (0, 1], else raise ValueError."""
    if isinstance(imbalance, bool) or not isinstance(imbalance, (int, float)):
        raise TypeError(f"imbalance must be a number in (0, 1], got {type(imbalance).__name__}")
    if not 0.0 < imbalance <= 1.0:  # also rejects NaN
        raise ValueError(
            f"imbalance must lie in (0, 1] (tail/head ratio, e.g. 0.01 for imbalance factor 100), got {imbalance}"
        )
    return float(imbalance)


def long_tail_counts(n_max: int, num_classes: int, imbalance: float) -> list[int]:
    """Images kept per class: ``n_c = max(1, floor(n_max * rho ** (c / (C - 1))))``.

    >>> long_tail_counts(5000, 10, 0.01)
    [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    """
    rho = check_imbalance(imbalance)
    if n_max < 1 or num_classes < 1:
        raise ValueError(f"need n_max >= 1 and num_classes >= 1, got n_max={n_max}, num_classes={num_classes}")
    if num_classes == 1:
        return [n_max]
    return [max(1, math.floor(n_max * rho ** (c / (num_classes - 1)))) for c in range(num_classes)]


def make_long_tailed(train: ImageSet, num_classes: int, imbalance: float, seed: int = 0) -> ImageSet:
    """Subsample ``train`` to the long-tailed profile of :func:`long_tail_counts`.

    ``n_max`` is the smallest class count of ``train`` so every class can supply its quota
    exactly. Which images a class keeps is a uniform draw without replacement seeded by
    ``seed``; the kept images stay in their original order. Soft labels are carried along.
    """
    counts = train.class_counts(num_classes)
    if counts.numel() > num_classes:
        raise ValueError(f"labels go up to {counts.numel() - 1} but num_classes={num_classes}")
    empty = torch.nonzero(counts == 0).flatten().tolist()
    if empty:
        raise ValueError(f"cannot build a long-tailed set: classes {empty} have no training images")
    quotas = long_tail_counts(int(counts.min()), num_classes, imbalance)
    generator = torch.Generator().manual_seed(seed)
    kept = []
    for c, quota in enumerate(quotas):
        members = train.class_indices(c)
        kept.append(members[torch.randperm(len(members), generator=generator)[:quota]])
    return train.subset(torch.sort(torch.cat(kept)).values)
