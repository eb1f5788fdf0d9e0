"""FFC spectra of real vs synthetic data under one network (UniDD, docs/unidd_cfm.md Sec. 7).

UniDD reads a distilled set through the eigenvalues of its feature-feature correlation
FFC = X^T X / n (Eq. 1): large eigenvalues are the low frequencies every DD filter matches, small
ones the high frequencies only high-pass filters (and CFM's late stage) reach. Comparing the real
and synthetic spectra under the same (random or trained) network shows which band a run matched.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from matplotlib.figure import Figure
from torch import Tensor

from distillset.data.base import ImageSet

# Eigenvalues below this fraction of the largest one are round-off and left out of log plots.
PLOT_RELATIVE_FLOOR = 1e-12


@dataclass(frozen=True)
class SpectrumPair:
    """Descending FFC eigenvalues (float64, >= 0, length d) of real and synthetic features."""

    label: str
    real: Tensor
    synthetic: Tensor


def ffc_eigenvalues(features: Tensor) -> Tensor:
    """Eigenvalues of X^T X / n, descending and clamped at 0, length d (via the n x n Gram when n < d)."""
    if features.ndim != 2 or features.shape[0] == 0:
        raise ValueError(f"features must be a non-empty (n, d) matrix, got shape {tuple(features.shape)}")
    x = features.detach().to(torch.float64)
    n, d = x.shape
    small_side = x @ x.T if n < d else x.T @ x
    eigenvalues = torch.linalg.eigvalsh(small_side / n).flip(0).clamp_min(0.0)
    return torch.cat([eigenvalues, eigenvalues.new_zeros(d - eigenvalues.shape[0])])


def ffc_spectra(
    real_features: Tensor,
    real_labels: Tensor,
    synthetic_features: Tensor,
    synthetic_labels: Tensor,
    *,
    per_class: bool = False,
) -> list[SpectrumPair]:
    """Real vs synthetic FFC eigenvalues: one pooled pair, or one pair per synthetic class."""
    for side, features, labels in (
        ("real", real_features, real_labels),
        ("synthetic", synthetic_features, synthetic_labels),
    ):
        if labels.ndim != 1 or labels.shape[0] != features.shape[0]:
            raise ValueError(
                f"{side} labels must be (n,) class indices with n={features.shape[0]}, got shape {tuple(labels.shape)}"
            )
    if not per_class:
        return [SpectrumPair("pooled", ffc_eigenvalues(real_features), ffc_eigenvalues(synthetic_features))]
    spectra = []
    for c in torch.unique(synthetic_labels).tolist():
        real_of_class = real_features[real_labels == c]
        if real_of_class.shape[0] == 0:
            raise ValueError(f"class {c} has synthetic but no real features; pass real features of every class")
        synthetic_of_class = synthetic_features[synthetic_labels == c]
        spectra.append(SpectrumPair(f"class {c}", ffc_eigenvalues(real_of_class), ffc_eigenvalues(synthetic_of_class)))
    return spectra


@torch.no_grad()
def embed_images(embed: Callable[[Tensor], Tensor], images: Tensor, batch_size: int = 256) -> Tensor:
    """``embed`` (e.g. ``net.embed``) applied in batches, flattened to (N, d)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return torch.cat([embed(batch).flatten(1) for batch in images.split(batch_size)])


def image_ffc_spectra(
    embed: Callable[[Tensor], Tensor],
    real: ImageSet,
    synthetic: ImageSet,
    *,
    per_class: bool = False,
    batch_size: int = 256,
) -> list[SpectrumPair]:
    """:func:`ffc_spectra` of two image sets embedded by the same network (images on its device)."""
    return ffc_spectra(
        embed_images(embed, real.images, batch_size),
        real.labels,
        embed_images(embed, synthetic.images, batch_size),
        synthetic.labels,
        per_class=per_class,
    )


def plot_ffc_spectra(
    spectra: Sequence[SpectrumPair],
    path: str | Path,
    *,
    title: str | None = None,
    levels: Mapping[str, float] | None = None,
) -> Path:
    """Write a PNG: eigenvalue vs rank on log-log axes, real solid and synthetic dashed, one panel per pair.

    ``levels`` draws labelled horizontal lines (e.g. the ridge beta at the start and end of CFM).
    Zero eigenvalues (rank-deficient synthetic FFC) cannot be shown on a log axis and are dropped.
    """
    if not spectra:
        raise ValueError("plot_ffc_spectra needs at least one SpectrumPair")
    columns = min(len(spectra), 5)
    rows = -(-len(spectra) // columns)
    figure = Figure(figsize=(max(3.2 * columns, 6.4), 2.8 * rows + 0.4), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False, sharey=True)
    for axis, pair in zip(axes.flat, spectra, strict=False):  # spare panels stay empty
        for eigenvalues, style, name in ((pair.real, "-", "real"), (pair.synthetic, "--", "synthetic")):
            values = eigenvalues.cpu()
            shown = values > values.max() * PLOT_RELATIVE_FLOOR
            ranks = torch.arange(1, values.shape[0] + 1)[shown]
            axis.plot(ranks.numpy(), values[shown].numpy(), style, label=f"{name} ({int(shown.sum())} non-zero)")
        for level_name, level in (levels or {}).items():
            axis.axhline(level, color="grey", linestyle=":", linewidth=1)
            axis.annotate(level_name, (1, level), fontsize=7, color="grey", va="bottom")
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_title(pair.label, fontsize=9)
        axis.set_xlabel("eigenvalue rank")
        axis.legend(fontsize=7)
    for axis in axes.flat[len(spectra):]:
        axis.set_visible(False)
    axes[0, 0].set_ylabel("FFC eigenvalue")
    if title:
        figure.suptitle("\n".join(textwrap.wrap(title, width=70)), fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    return path
