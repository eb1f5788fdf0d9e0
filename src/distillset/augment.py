"""Differentiable siamese augmentation (DSA; Zhao & Bilen, ICML 2021), with replayable parameters.

Semantics follow the reference ``utils.DiffAugment`` (dm_protocol.md section 2). Unlike the
reference, randomness comes from an explicit ``torch.Generator`` (never the global RNG) and is
kept in a :class:`DSAParams` object that can be applied to any number of batches::

    dsa = DSA()                                   # mode 'S', all six op groups
    params = dsa.sample(1, generator, siamese=True)
    real_aug = dsa.apply(real, params)            # 256 real images
    syn_aug = dsa.apply(synthetic, params)        # 10 synthetic images, identical transform

Every parameter is stored as U[0, 1) variates and mapped to its range when applied, so one
parameter set serves batches of any size and image resolution.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

DEFAULT_STRATEGY = "color_crop_cutout_flip_scale_rotate"

# Strategy group -> the ops it applies, in order (reference ``AUGMENT_FNS``).
OP_GROUPS: dict[str, tuple[str, ...]] = {
    "color": ("brightness", "saturation", "contrast"),
    "crop": ("crop",),
    "cutout": ("cutout",),
    "flip": ("flip",),
    "scale": ("scale",),
    "rotate": ("rotate",),
}
# U[0, 1) variates each op consumes per image: crop/cutout draw (row, column), scale (sx, sy).
VARIATES_PER_OP: dict[str, int] = {
    "brightness": 1,
    "saturation": 1,
    "contrast": 1,
    "crop": 2,
    "cutout": 2,
    "flip": 1,
    "scale": 2,
    "rotate": 1,
}


@dataclass(frozen=True, eq=False)
class DSAParams:
    """One draw of DSA: the ops to run, in order, and their U[0, 1) variates.

    ``variates[op]`` has shape ``(n, VARIATES_PER_OP[op])``; ``n == 1`` when ``siamese``
    (one value set for every image of every batch), else ``n`` is the batch size.
    """

    ops: tuple[str, ...]
    variates: Mapping[str, Tensor]
    siamese: bool


def _uniform_int(u: Tensor, low: int, high: int) -> Tensor:
    """Map u ~ U[0, 1) to an integer uniform on [low, high] (the clamp guards fp rounding at u -> 1)."""
    return (low + torch.floor(u * (high - low + 1))).clamp(max=high).long()


def _per_image(values: Tensor, x: Tensor) -> Tensor:
    """Shape per-image scalars ``(n,)`` as ``(n, 1, 1, 1)`` in ``x``'s dtype."""
    return values.to(x.dtype).view(-1, 1, 1, 1)


def _affine(x: Tensor, theta: Tensor, align_corners: bool) -> Tensor:
    """Resample ``x`` with per-image (or one shared) 2x3 affine matrices, zero padding, bilinear."""
    grid = F.affine_grid(theta, [theta.shape[0], *x.shape[1:]], align_corners=align_corners)
    grid = grid.to(x.dtype).expand(x.shape[0], -1, -1, -1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=align_corners)


@dataclass
class DSA:
    """Differentiable siamese augmentation with the reference ``ParamDiffAug`` defaults.

    ``mode='S'`` applies one op group per call, chosen uniformly; ``'M'`` applies every group
    of ``strategy`` in order. ``seed`` seeds the generator used when a call passes none
    (``None``: a non-deterministic seed). ``align_corners`` is passed to ``affine_grid`` and
    ``grid_sample`` for scale/rotate; ``False`` is what the reference code runs with on
    PyTorch >= 1.3, where it calls them without the argument.
    """

    strategy: str = DEFAULT_STRATEGY
    mode: Literal["S", "M"] = "S"
    brightness: float = 1.0
    saturation: float = 2.0
    contrast: float = 0.5
    crop_ratio: float = 0.125
    cutout_ratio: float = 0.5
    flip_prob: float = 0.5
    scale_ratio: float = 1.2
    rotate_degrees: float = 15.0
    align_corners: bool = False
    seed: int | None = None
    groups: tuple[str, ...] = field(init=False)
    generator: torch.Generator = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = [] if self.strategy.lower() in ("", "none") else self.strategy.split("_")
        unknown = [name for name in names if name not in OP_GROUPS]
        if unknown:
            raise ValueError(
                f"unknown DSA op group(s) {unknown} in strategy '{self.strategy}'; "
                f"use '_'-joined names from: {', '.join(OP_GROUPS)} (or 'none')"
            )
        if self.mode not in ("S", "M"):
            raise ValueError(f"DSA mode must be 'S' (one op group per call) or 'M' (all groups), got {self.mode!r}")
        self.groups = tuple(names)
        self.generator = torch.Generator()
        if self.seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(self.seed)

    def sample(
        self, batch_size: int, generator: torch.Generator | None = None, *, siamese: bool = True
    ) -> DSAParams:
        """Draw the op choice and the variates from ``generator`` (default: this DSA's own).

        ``siamese=True``: one value set shared by every image, replayable on batches of any
        size. ``siamese=False``: per-image values for a batch of exactly ``batch_size``.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        generator = self.generator if generator is None else generator
        groups = self.groups
        if self.mode == "S" and groups:
            choice = torch.randint(len(groups), (1,), generator=generator, device=generator.device)
            groups = (groups[int(choice)],)
        ops = tuple(op for group in groups for op in OP_GROUPS[group])
        rows = 1 if siamese else batch_size
        variates = {
            op: torch.rand(rows, VARIATES_PER_OP[op], generator=generator, device=generator.device) for op in ops
        }
        return DSAParams(ops=ops, variates=variates, siamese=siamese)

    def apply(self, x: Tensor, params: DSAParams) -> Tensor:
        """Augment ``x`` (N, C, H, W) with ``params``; differentiable with respect to ``x``."""
        if x.ndim != 4:
            raise ValueError(f"DSA expects images shaped (N, C, H, W), got {tuple(x.shape)}")
        for op in params.ops:
            u = params.variates[op].to(x.device)
            if u.shape[0] not in (1, x.shape[0]):
                raise ValueError(
                    f"DSA params were drawn per image for a batch of {u.shape[0]} but x has {x.shape[0]} images; "
                    "draw them with sample(len(x), siamese=False) or use siamese=True params"
                )
            x = getattr(self, f"_{op}")(x, u)
        return x

    def __call__(self, x: Tensor, generator: torch.Generator | None = None, *, siamese: bool = False) -> Tensor:
        """Sample and apply in one go (per-image values by default, as in evaluation training)."""
        return self.apply(x, self.sample(x.shape[0], generator, siamese=siamese))

    # Ops: x (N, C, H, W), u (n, k) with n in {1, N}; formulas of the reference ``rand_*``.

    def _brightness(self, x: Tensor, u: Tensor) -> Tensor:
        """x + (u - 0.5) * brightness."""
        return x + _per_image(u[:, 0] - 0.5, x) * self.brightness

    def _saturation(self, x: Tensor, u: Tensor) -> Tensor:
        """Scale the deviation from the per-pixel channel mean by u * saturation."""
        mean = x.mean(dim=1, keepdim=True)
        return (x - mean) * _per_image(u[:, 0] * self.saturation, x) + mean

    def _contrast(self, x: Tensor, u: Tensor) -> Tensor:
        """Scale the deviation from the per-image mean by u + contrast."""
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return (x - mean) * _per_image(u[:, 0] + self.contrast, x) + mean

    def _crop(self, x: Tensor, u: Tensor) -> Tensor:
        """Integer translation: out[i, j] = x[i + t_row, j + t_col], zero outside the image.

        t_row, t_col uniform in [-s, s], s = int(side * crop_ratio + 0.5) (4 at 32 px).
        """
        batch, channels, height, width = x.shape
        pad_h, pad_w = int(height * self.crop_ratio + 0.5), int(width * self.crop_ratio + 0.5)
        shift_row = _uniform_int(u[:, 0], -pad_h, pad_h).view(-1, 1, 1)
        shift_col = _uniform_int(u[:, 1], -pad_w, pad_w).view(-1, 1, 1)
        rows = torch.arange(height, device=x.device).view(1, -1, 1) + shift_row + pad_h
        cols = torch.arange(width, device=x.device).view(1, 1, -1) + shift_col + pad_w
        index = (rows * (width + 2 * pad_w) + cols).view(-1, 1, height * width).expand(batch, channels, -1)
        padded = F.pad(x, (pad_w, pad_w, pad_h, pad_h)).flatten(2)
        return padded.gather(2, index).view(batch, channels, height, width)

    def _cutout(self, x: Tensor, u: Tensor) -> Tensor:
        """Zero a square of side int(side * ratio + 0.5) centred at a uniform position, clipped at the borders."""
        height, width = x.shape[2:]
        size_h, size_w = int(height * self.cutout_ratio + 0.5), int(width * self.cutout_ratio + 0.5)
        # Reference: centre ~ randint(0, side + 1 - size % 2), square rows [centre - size // 2, + size).
        top = (_uniform_int(u[:, 0], 0, height - size_h % 2) - size_h // 2).view(-1, 1, 1)
        left = (_uniform_int(u[:, 1], 0, width - size_w % 2) - size_w // 2).view(-1, 1, 1)
        rows = torch.arange(height, device=x.device).view(1, -1, 1)
        cols = torch.arange(width, device=x.device).view(1, 1, -1)
        inside = (rows >= top) & (rows < top + size_h) & (cols >= left) & (cols < left + size_w)
        return x * (~inside).unsqueeze(1).to(x.dtype)

    def _flip(self, x: Tensor, u: Tensor) -> Tensor:
        """Horizontal flip where u < flip_prob."""
        return torch.where(u[:, 0].view(-1, 1, 1, 1) < self.flip_prob, x.flip(3), x)

    def _scale(self, x: Tensor, u: Tensor) -> Tensor:
        """Affine [[sx, 0, 0], [0, sy, 0]], sx, sy ~ U(1 / ratio, ratio) independently."""
        low = 1.0 / self.scale_ratio
        scales = u * (self.scale_ratio - low) + low
        theta = torch.zeros(u.shape[0], 2, 3, device=x.device)
        theta[:, 0, 0], theta[:, 1, 1] = scales[:, 0], scales[:, 1]
        return _affine(x, theta, self.align_corners)

    def _rotate(self, x: Tensor, u: Tensor) -> Tensor:
        """Affine [[cos a, -sin a, 0], [sin a, cos a, 0]], a ~ U(-degrees, degrees)."""
        angle = (u[:, 0] - 0.5) * 2 * math.radians(self.rotate_degrees)
        cos, sin, zero = angle.cos(), angle.sin(), torch.zeros_like(angle)
        theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
        return _affine(x, theta, self.align_corners)


def cutmix(x: Tensor, generator: torch.Generator, beta: float = 1.0) -> tuple[Tensor, Tensor, float]:
    """CutMix (Yun et al., ICCV 2019, Eq. 1-2) as the Minimax evaluation code applies it to a batch.

    ``lam ~ Beta(beta, beta)``; a box of side ``sqrt(1 - lam)`` times the image side, centred uniformly and
    clipped to the image, is pasted from ``x[perm]`` (``perm`` a random permutation of the batch). Returns the
    mixed batch, ``perm`` and the kept fraction ``r`` of the original pixels: the loss is
    ``r * CE(logits, y) + (1 - r) * CE(logits, y[perm])``.
    """
    from scipy.special import betaincinv

    u = torch.rand(3, generator=generator, dtype=torch.float64).tolist()
    lam = float(betaincinv(beta, beta, u[0]))  # Beta(beta, beta) by inverting its CDF
    perm = torch.randperm(x.shape[0], generator=generator).to(x.device)
    height, width = x.shape[-2:]
    cut = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * cut), int(width * cut)
    centre_y, centre_x = int(u[1] * height), int(u[2] * width)
    top, bottom = max(centre_y - cut_h // 2, 0), min(centre_y + cut_h // 2, height)
    left, right = max(centre_x - cut_w // 2, 0), min(centre_x + cut_w // 2, width)
    mixed = x.clone()
    mixed[..., top:bottom, left:right] = x[perm][..., top:bottom, left:right]
    kept = 1.0 - (bottom - top) * (right - left) / (height * width)
    return mixed, perm, kept
