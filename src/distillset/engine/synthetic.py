"""How learned pixels become training images.

``factor = 1``: each stored image is one training image (DM). ``factor = f > 1``: IDM's partition and
expansion (Zhao et al., CVPR 2023, Sec. 3.2; as IDC's multi-formation): each stored image is an f×f grid
of low-resolution images, each upsampled back to full size, so one stored image yields f² images.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def expand(stored: Tensor, factor: int) -> Tensor:
    """(N, C, H, W) stored images -> (N·factor², C, H, W) training images (sample-major order)."""
    if factor == 1:
        return stored
    n, c, h, w = stored.shape
    if h % factor or w % factor:
        raise ValueError(f"image size {h}x{w} is not divisible by the expansion factor {factor}")
    ph, pw = h // factor, w // factor
    patches = (
        stored.reshape(n, c, factor, ph, factor, pw).permute(0, 2, 4, 1, 3, 5).reshape(n * factor * factor, c, ph, pw)
    )
    return F.interpolate(patches, size=(h, w), mode="bilinear", align_corners=False)


def pack(images: Tensor, factor: int) -> Tensor:
    """Inverse layout of :func:`expand` for initialisation: (N·factor², C, H, W) full-size images are
    downscaled and tiled into (N, C, H, W) stored images."""
    if factor == 1:
        return images
    m, c, h, w = images.shape
    if m % (factor * factor):
        raise ValueError(f"{m} images cannot be packed {factor}x{factor}")
    small = F.interpolate(images, size=(h // factor, w // factor), mode="bilinear", align_corners=False, antialias=True)
    n = m // (factor * factor)
    return small.reshape(n, factor, factor, c, h // factor, w // factor).permute(0, 3, 1, 4, 2, 5).reshape(n, c, h, w)


def expanded_labels(labels: Tensor, factor: int) -> Tensor:
    return labels.repeat_interleave(factor * factor)
