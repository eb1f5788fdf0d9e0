"""Backdoor triggers in the normalised pixel space that distilled sets live in.

``patch``: the bottom-right ``size x size`` square of every channel set to ``value`` (``add_backdoor`` of
Zi-YuanYang/Poisoned_DD; its defaults, size 1 and value 10, are deliberately outside the valid pixel range).
``blended``: ``(1 - ratio) * x + ratio * pattern`` with a fixed uniform-noise pattern drawn in [0, 1] pixel space
(the Blended attack of Chen et al., 2017); normalisation is affine, so blending normalised images with the
normalised pattern equals blending in pixel space.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from distillset.data.base import DatasetInfo

TriggerKind = Literal["patch", "blended"]
TRIGGER_KINDS: tuple[str, ...] = ("patch", "blended")


@dataclass(frozen=True)
class TriggerSpec:
    """What a trigger is; :meth:`build` turns it into a :class:`Trigger` for one dataset."""

    kind: TriggerKind = "patch"
    size: int = 1  # patch side in pixels
    value: float = 10.0  # patch value in normalised space
    blend_ratio: float = 0.2  # blended: weight of the pattern
    pattern_seed: int = 0  # blended: seed of the noise pattern

    def __post_init__(self) -> None:
        if self.kind not in TRIGGER_KINDS:
            raise ValueError(f"unknown trigger '{self.kind}'; choose one of {', '.join(TRIGGER_KINDS)}")
        if self.size < 1:
            raise ValueError(f"trigger size must be >= 1 pixel, got {self.size}")
        if not 0.0 < self.blend_ratio <= 1.0:
            raise ValueError(f"blend ratio must be in (0, 1], got {self.blend_ratio}")

    def build(self, info: DatasetInfo) -> Trigger:
        pattern = None
        if self.kind == "blended":
            generator = torch.Generator().manual_seed(self.pattern_seed)
            pixels = torch.rand((1, info.channels, *info.image_size), generator=generator)
            pattern = info.normalize(pixels)
        return Trigger(self, pattern)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Trigger:
    spec: TriggerSpec
    pattern: Tensor | None = None  # blended only, (1, C, H, W) normalised

    def apply(self, images: Tensor) -> Tensor:
        """``images`` (N, C, H, W, normalised) with the trigger stamped; the input is not modified."""
        if self.spec.kind == "patch":
            stamped = images.clone()
            stamped[:, :, -self.spec.size:, -self.spec.size:] = self.spec.value
            return stamped
        assert self.pattern is not None
        ratio = self.spec.blend_ratio
        return (1.0 - ratio) * images + ratio * self.pattern.to(images.device, images.dtype)
