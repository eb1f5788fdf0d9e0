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

from distillset.data.base import DatasetSplits, ImageSet
from distillset.nets import get_network
from distillset.objectives import get_objective
from distillset.training import trained_feature_network

# Eigenvalues below this fraction of the largest one are round-off and left out of log plots.
PLOT_RELATIVE_FLOOR = 1e-12


@dataclass(frozen=True)
class SpectrumPanel:
    """Descending FFC eigenvalues (float64, >= 0, length d) of real features and of one or more synthetic sets.

    ``synthetic`` maps a set's name (e.g. its method) to its eigenvalues, in the order they are plotted.
    """

    label: str
    real: Tensor
    synthetic: dict[str, Tensor]


def ffc_eigenvalues(features: Tensor) -> Tensor:
    """Eigenvalues of X^T X / n, descending and clamped at 0, length d (via the n x n Gram when n < d)."""
    if features.ndim != 2 or features.shape[0] == 0:
        raise ValueError(f"features must be a non-empty (n, d) matrix, got shape {tuple(features.shape)}")
    x = features.detach().to(torch.float64)
    n, d = x.shape
    small_side = x @ x.T if n < d else x.T @ x
    eigenvalues = torch.linalg.eigvalsh(small_side / n).flip(0).clamp_min(0.0)
    return torch.cat([eigenvalues, eigenvalues.new_zeros(d - eigenvalues.shape[0])])


def _check_labels(side: str, features: Tensor, labels: Tensor) -> None:
    if labels.ndim != 1 or labels.shape[0] != features.shape[0]:
        raise ValueError(
            f"{side} labels must be (n,) class indices with n={features.shape[0]}, got shape {tuple(labels.shape)}"
        )


def ffc_spectra(
    real_features: Tensor,
    real_labels: Tensor,
    synthetic: Mapping[str, tuple[Tensor, Tensor]],
    *,
    per_class: bool = False,
) -> list[SpectrumPanel]:
    """Real vs synthetic FFC eigenvalues for each named ``(features, labels)`` synthetic set.

    One pooled panel, or one panel per class that some synthetic set has (a set without that class is
    left out of its panel).
    """
    if not synthetic:
        raise ValueError("ffc_spectra needs at least one synthetic set")
    _check_labels("real", real_features, real_labels)
    for name, (features, labels) in synthetic.items():
        _check_labels(f"synthetic '{name}'", features, labels)
    if not per_class:
        return [SpectrumPanel("pooled", ffc_eigenvalues(real_features),
                              {name: ffc_eigenvalues(features) for name, (features, _) in synthetic.items()})]
    panels = []
    for c in torch.unique(torch.cat([labels for _, labels in synthetic.values()])).tolist():
        real_of_class = real_features[real_labels == c]
        if real_of_class.shape[0] == 0:
            raise ValueError(f"class {c} has synthetic but no real features; pass real features of every class")
        panels.append(SpectrumPanel(f"class {c}", ffc_eigenvalues(real_of_class), {
            name: ffc_eigenvalues(features[labels == c])
            for name, (features, labels) in synthetic.items() if bool((labels == c).any())
        }))
    return panels


@torch.no_grad()
def embed_images(embed: Callable[[Tensor], Tensor], images: Tensor, batch_size: int = 256) -> Tensor:
    """``embed`` (e.g. ``net.embed``) applied in batches, flattened to (N, d)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return torch.cat([embed(batch).flatten(1) for batch in images.split(batch_size)])


def image_ffc_spectra(
    embed: Callable[[Tensor], Tensor],
    real: ImageSet,
    synthetic: Mapping[str, ImageSet],
    *,
    per_class: bool = False,
    batch_size: int = 256,
) -> list[SpectrumPanel]:
    """:func:`ffc_spectra` of image sets embedded by the same network (images on its device)."""
    return ffc_spectra(
        embed_images(embed, real.images, batch_size),
        real.labels,
        {name: (embed_images(embed, images.images, batch_size), images.labels) for name, images in synthetic.items()},
        per_class=per_class,
    )


@dataclass(frozen=True)
class SpectrumComparison:
    """What :func:`compare_spectra` computed: the panels, the ridge-beta levels to draw, and the network."""

    panels: list[SpectrumPanel]
    levels: dict[str, float]
    network: str


def ridge_beta_levels(name: str, objective: str, objective_params: Mapping[str, object],
                      real_trace: float) -> dict[str, float]:
    """The ridge beta(s) of a run's objective (CFM start/end, low/high-pass beta) in FFC eigenvalue units.

    The objectives set beta relative to tr(FFC_real) of the step's real features; ``real_trace`` is that
    trace for the plotted real features. An objective without a ridge beta (or not registered) gives none.
    """
    try:
        settings = get_objective(objective, **objective_params).config()
    except (KeyError, TypeError, ValueError):
        return {}
    labels = {"beta": "\u03b2", "beta_start": "\u03b2 start", "beta_end": "\u03b2 end"}
    return {f"{name} {label}": getattr(settings, key) * real_trace for key, label in labels.items()
            if hasattr(settings, key)}


def compare_spectra(
    splits: DatasetSplits,
    synthetic: Mapping[str, tuple[ImageSet, Mapping[str, object]]],
    *,
    model: str = "convnet3",
    trained_epochs: int = 0,
    real_per_class: int = 500,
    per_class: bool = False,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> SpectrumComparison:
    """FFC spectra of ``real_per_class`` real training images per class and of each named synthetic set, all
    embedded by one network: ``model`` at a seeded random init, or trained ``trained_epochs`` epochs on the
    real data. ``synthetic`` maps a name to (set, the run's distillation config); ridge-filter runs also give
    their beta levels (pooled spectrum only)."""
    device = torch.device(device)
    info = splits.info
    if trained_epochs > 0:
        net = trained_feature_network(splits, model, epochs=trained_epochs, seed=seed, device=device)
        network = f"{model} trained {trained_epochs} epochs on real data"
    else:
        net = get_network(model, info.channels, info.num_classes, info.image_size, seed=seed).to(device)
        network = f"{model}, random init (seed {seed})"
    net.eval()
    real = splits.train.sample_per_class(real_per_class, info.num_classes, torch.Generator().manual_seed(seed))
    on_device = {name: ImageSet(images.images.to(device), images.labels.to(device))
                 for name, (images, _) in synthetic.items()}
    with torch.no_grad():
        panels = image_ffc_spectra(net.embed, ImageSet(real.images.to(device), real.labels.to(device)), on_device,
                                   per_class=per_class)
    levels: dict[str, float] = {}
    if not per_class:
        real_trace = float(panels[0].real.sum())
        for name, (_, config) in synthetic.items():
            levels.update(ridge_beta_levels(name, str(config.get("objective", "")),
                                            dict(config.get("objective_params", {})), real_trace))  # type: ignore[arg-type]
    return SpectrumComparison(panels, levels, network)


def _merged_levels(levels: Mapping[str, float]) -> dict[float, list[str]]:
    """Levels by value, names of equal levels (to 1e-9 relative) together, so their labels do not overprint."""
    merged: dict[float, list[str]] = {}
    for name, level in levels.items():
        same = next((value for value in merged if abs(value - level) <= 1e-9 * max(abs(value), abs(level))), level)
        merged.setdefault(same, []).append(name)
    return merged


def _ranked(eigenvalues: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Eigenvalues on the CPU, their ranks (1-based) and the mask of those a log axis can show."""
    values = eigenvalues.cpu()
    return values, torch.arange(1, values.shape[0] + 1), values > values.max() * PLOT_RELATIVE_FLOOR


def plot_ffc_spectra(
    spectra: Sequence[SpectrumPanel],
    path: str | Path,
    *,
    title: str | None = None,
    levels: Mapping[str, float] | None = None,
) -> Path:
    """Write a PNG: per panel, eigenvalue vs rank on log-log axes (real solid, each synthetic set dashed) and
    below it the synthetic / real eigenvalue ratio per rank (1 = matched), which shows small mismatches.

    ``levels`` draws labelled horizontal lines (e.g. the ridge beta at the start and end of CFM).
    Zero eigenvalues (rank-deficient synthetic FFC) cannot be shown on a log axis and are dropped.
    """
    if not spectra:
        raise ValueError("plot_ffc_spectra needs at least one SpectrumPanel")
    columns = min(len(spectra), 5)
    rows = -(-len(spectra) // columns)
    figure = Figure(figsize=(max(3.2 * columns, 6.4), 4.4 * rows + 0.4), layout="constrained")
    axes = figure.subplots(2 * rows, columns, squeeze=False, sharex="col",
                           gridspec_kw={"height_ratios": [2.5, 1] * rows})
    names = list(dict.fromkeys(name for panel in spectra for name in panel.synthetic))
    colours = {name: f"C{i + 1}" for i, name in enumerate(names)}  # the same colour for a set in every panel
    merged_levels = _merged_levels(levels or {})
    for index, panel in enumerate(spectra):
        row, column = 2 * (index // columns), index % columns
        axis, ratio_axis = axes[row, column], axes[row + 1, column]
        real, ranks, real_shown = _ranked(panel.real)
        axis.plot(ranks[real_shown].numpy(), real[real_shown].numpy(), "-",
                  color="C0", label=f"real ({int(real_shown.sum())} non-zero)")
        for name, eigenvalues in panel.synthetic.items():
            values, ranks, shown = _ranked(eigenvalues)
            label = name if len(names) > 1 else "synthetic"
            axis.plot(ranks[shown].numpy(), values[shown].numpy(), "--", color=colours[name],
                      label=f"{label} ({int(shown.sum())} non-zero)")
            both = shown & real_shown
            ratio_axis.plot(ranks[both].numpy(), (values[both] / real[both]).numpy(), color=colours[name])
        for level, level_names in merged_levels.items():
            axis.axhline(level, color="grey", linestyle=":", linewidth=1)
            axis.annotate(", ".join(level_names), (1, level), fontsize=7, color="grey", va="bottom")
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_title(panel.label, fontsize=9)
        axis.legend(fontsize=7)
        ratio_axis.axhline(1.0, color="C0", linewidth=1)
        ratio_axis.set_xlabel("eigenvalue rank")
    for index in range(len(spectra), rows * columns):
        row, column = 2 * (index // columns), index % columns
        axes[row, column].set_visible(False)
        axes[row + 1, column].set_visible(False)
    for row in range(rows):
        axes[2 * row, 0].set_ylabel("FFC eigenvalue")
        axes[2 * row + 1, 0].set_ylabel("synthetic / real")
    if title:
        figure.suptitle("\n".join(textwrap.wrap(title, width=70)), fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    return path
