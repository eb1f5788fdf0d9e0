"""Core data types: what every loader returns and every method consumes."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass(frozen=True)
class DatasetInfo:
    """Static description of a registered dataset."""

    name: str
    channels: int
    image_size: tuple[int, int]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...] = ()

    def normalize(self, images: Tensor) -> Tensor:
        """Map images in [0, 1] to the normalised space methods work in."""
        mean = torch.tensor(self.mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
        return (images - mean) / std

    def denormalize(self, images: Tensor) -> Tensor:
        """Inverse of :meth:`normalize` (no clamping)."""
        mean = torch.tensor(self.mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
        return images * std + mean


@dataclass
class ImageSet:
    """A labelled image tensor set in normalised space.

    ``images`` is float32 ``(N, C, H, W)``; ``labels`` int64 ``(N,)``; ``soft_labels`` optional
    float ``(N, num_classes)`` (probabilities or logits, used instead of ``labels`` when present).
    """

    images: Tensor
    labels: Tensor
    soft_labels: Tensor | None = None
    _by_class: dict[int, Tensor] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.images.ndim != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(self.images.shape)}")
        if self.labels.ndim != 1 or self.labels.shape[0] != self.images.shape[0]:
            raise ValueError(
                f"labels must be (N,) with N={self.images.shape[0]}, got shape {tuple(self.labels.shape)}"
            )
        if self.soft_labels is not None and self.soft_labels.shape[0] != self.images.shape[0]:
            raise ValueError("soft_labels must have one row per image")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def class_indices(self, c: int) -> Tensor:
        """Indices of the images of class ``c`` (cached)."""
        if c not in self._by_class:
            self._by_class[c] = torch.nonzero(self.labels == c, as_tuple=False).flatten()
        return self._by_class[c]

    def class_counts(self, num_classes: int) -> Tensor:
        return torch.bincount(self.labels, minlength=num_classes)

    def subset(self, indices: Tensor) -> ImageSet:
        soft = None if self.soft_labels is None else self.soft_labels[indices]
        return ImageSet(self.images[indices], self.labels[indices], soft)

    def sample_per_class(self, count: int, num_classes: int, generator: torch.Generator) -> ImageSet:
        """Up to ``count`` images of each class, drawn without replacement (a class with fewer gives all)."""
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        picks = []
        for c in range(num_classes):
            members = self.class_indices(c)
            picks.append(members[torch.randperm(len(members), generator=generator)[:count]])
        return self.subset(torch.cat(picks))


@dataclass
class DatasetSplits:
    """A dataset's train and test splits plus its description."""

    info: DatasetInfo
    train: ImageSet
    test: ImageSet
