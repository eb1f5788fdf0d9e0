"""Figures: image grids of synthetic sets."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from distillset.data.base import DatasetInfo, ImageSet  # noqa: E402


def image_grid(images: ImageSet, info: DatasetInfo, max_per_class: int = 10) -> torch.Tensor:
    """(H·classes, W·max_per_class, C) grid in [0, 1]: one row per class, de-normalised and clipped."""
    rows = []
    classes = sorted(set(images.labels.tolist()))
    for c in classes:
        members = images.images[images.labels == c][:max_per_class]
        pixels = info.denormalize(members).clamp(0, 1)
        pad = max_per_class - len(pixels)
        if pad:
            pixels = torch.cat([pixels, pixels.new_ones((pad, *pixels.shape[1:]))])
        rows.append(torch.cat(list(pixels), dim=2))  # C, H, W*k
    grid = torch.cat(rows, dim=1)
    return grid.permute(1, 2, 0)


def save_image_grid(images: ImageSet, info: DatasetInfo, path: str | Path, max_per_class: int = 10) -> Path:
    """Write the grid of :func:`image_grid` as a PNG (grey colormap for one channel)."""
    grid = image_grid(images, info, max_per_class).numpy()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = grid.shape[:2]
    fig = plt.figure(figsize=(max(width / 40, 2), max(height / 40, 2)), dpi=80)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.axis("off")
    if grid.shape[2] == 1:
        ax.imshow(grid[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(grid, interpolation="nearest")
    fig.savefig(path)
    plt.close(fig)
    return path
