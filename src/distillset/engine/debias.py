"""Sample re-weighting of biased real data (``DistillConfig.debias``; docs/biased.md).

``kde``: after Cui et al., "Mitigating Bias in Dataset Distillation" (arXiv 2406.06609): real images in dense
regions of an embedding space (the bias-aligned majority of a class) are down-weighted, rare ones (the
bias-conflicting images) up-weighted, by the inverse of a kernel density estimate. The paper's exact kernel,
bandwidth, weight formula and encoder were not available; this is our reconstruction:

    z_i = g(x_i) / ||g(x_i)||,   d_i = (1 / n_c) sum_{j in c} exp(-||z_i - z_j||^2 / (2 h_c^2)),
    w_i = d_i^(-power), scaled to mean 1 within class c,

with ``h_c = bandwidth`` or, when 0, ``bandwidth_scale`` times the median distance between class c's embeddings.
The weights enter the distillation as sampling probabilities: each iteration's real batch of class c is drawn
with replacement with probability proportional to ``w_i`` (so any objective's real statistics are, in
expectation, the weighted ones; for DM the real mean embedding becomes ``sum_i w_i f(x_i) / sum_i w_i``), and the
initial images are drawn without replacement with the same probabilities.

The embedding ``g``: ``embedding="random"`` is a randomly initialised network of the distillation architecture
(``DistillConfig.model`` at the run's seed) without normalisation layers by default (``norm="none"``): DM's own
ConvNet normalises each feature map per image (instance norm), which divides out a colour bias almost entirely
(the first convolution of a coloured stroke ``c * x`` is ``(w . c) * (k * x)`` plus a constant per channel), so its
embedding hardly separates the colours (docs/biased.md). ``"trained"`` is
:func:`~distillset.training.trained_feature_network` trained on the (biased) real set for ``feature_epochs``
epochs, which picks up the bias shortcut (Cui et al. train a supervised-contrastive encoder instead).
``"teacher"`` is the embedding of the teacher stored in the folder ``teacher``
(:mod:`distillset.training.teachers`), trained on the same (biased) dataset: the real set's dataset name,
channels and image size must be the teacher's.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distillset.data.base import DatasetInfo, DatasetSplits, ImageSet
from distillset.nets import get_network
from distillset.runtime import precision_autocast
from distillset.training import trained_feature_network
from distillset.training.teachers import load_teacher, teacher_of, teacher_record

DEBIAS_METHODS = ("none", "kde")
EMBEDDINGS = ("random", "trained", "teacher")
EMBED_CHUNK = 500


@dataclass(frozen=True)
class KDEWeighting:
    """Settings of ``debias="kde"`` (``DistillConfig.debias_params``)."""

    embedding: str = "random"  # "random" | "trained" | "teacher"
    norm: str = "none"  # normalisation layers of the random embedding network ("instancenorm": DM's own network)
    bandwidth: float = 0.0  # kernel width h; 0: bandwidth_scale x the class's median embedding distance
    bandwidth_scale: float = 0.5
    power: float = 1.0  # w = density^(-power); 0 gives uniform weights
    feature_epochs: int = 3  # training epochs of the "trained" embedding
    teacher: str = ""  # teacher folder of the "teacher" embedding (`distillset teacher train`)

    def __post_init__(self) -> None:
        if self.embedding not in EMBEDDINGS:
            raise ValueError(f"kde embedding must be one of {', '.join(EMBEDDINGS)}, got {self.embedding!r}")
        if (self.embedding == "teacher") != bool(self.teacher):
            raise ValueError("kde: embedding=teacher takes the teacher's folder and only it does: pass "
                             "--debias-param embedding=teacher --debias-param teacher=PATH (a teacher of the same "
                             f"biased dataset), got embedding={self.embedding!r}, teacher={self.teacher!r}")
        if self.bandwidth < 0 or self.bandwidth_scale <= 0 or self.power < 0 or self.feature_epochs < 1:
            raise ValueError("kde needs bandwidth >= 0, bandwidth_scale > 0, power >= 0 and feature_epochs >= 1, got "
                             f"{asdict(self)}")

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> KDEWeighting:
        unknown = sorted(set(params) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown kde parameter(s) {', '.join(unknown)}; known: "
                             f"{', '.join(cls.__dataclass_fields__)}")
        return cls(**params)


def check_debias(method: str, params: dict[str, Any]) -> None:
    """Raise ValueError for an unknown method or bad parameters."""
    if method not in DEBIAS_METHODS:
        raise ValueError(f"unknown debias method {method!r}; choose one of {', '.join(DEBIAS_METHODS)}")
    if method == "none" and params:
        raise ValueError(f"debias parameters {sorted(params)} were given without a debias method; add --debias kde")
    if method == "kde":
        KDEWeighting.from_params(params)


def kde_weights(features: Tensor, labels: Tensor, num_classes: int, *, bandwidth: float = 0.0,
                bandwidth_scale: float = 0.5, power: float = 1.0) -> Tensor:
    """Inverse-density weights (module docstring), float64, mean 1 within each class."""
    z = F.normalize(features.float(), dim=1)
    weights = torch.ones(len(labels), dtype=torch.float64)
    for c in range(num_classes):
        members = torch.nonzero(labels == c).flatten()
        if len(members) < 2:
            continue
        distances = torch.cdist(z[members], z[members])
        h = bandwidth or bandwidth_scale * float(distances[torch.triu_indices(len(members), len(members), 1).unbind()]
                                                 .median())
        if h <= 0:  # all embeddings identical: every image equally dense
            continue
        density = torch.exp(-distances.double().square() / (2 * h * h)).mean(dim=1)
        w = density.pow(-power)
        weights[members] = w / w.mean()
    return weights


def embed_images(net: nn.Module, images: Tensor, device: torch.device, precision: str) -> Tensor:
    """``net.embed`` of ``images`` without gradients, in chunks, under the run's real-pass precision."""
    net.eval()
    with torch.no_grad(), precision_autocast(device, precision):
        return torch.cat([net.embed(chunk.to(device)).float().cpu() for chunk in images.split(EMBED_CHUNK)])


def embedding_network(real: ImageSet, info: DatasetInfo, settings: KDEWeighting, model: str, seed: int,
                       device: torch.device, precision: str) -> nn.Module:
    if settings.embedding == "random":
        return get_network(model, info.channels, info.num_classes, info.image_size, seed=seed,
                           norm=settings.norm).to(device)
    if settings.embedding == "teacher":
        return teacher_of(settings.teacher, info, use="kde embedding=teacher", device=device,
                          fix="trained on that biased set itself: `distillset teacher train` takes no bias ratio, so "
                              "train it in Python, one folder per bias ratio (docs/biased.md)").net
    # the feature-network cache is keyed by dataset name and size; a digest of the pixels tells biased sets apart
    digest = hashlib.sha256(real.images.contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()[:12]
    named = replace(info, name=f"{info.name}-{digest}")
    splits = DatasetSplits(named, real, real.subset(torch.arange(0)))
    return trained_feature_network(splits, model, epochs=settings.feature_epochs, seed=seed, device=device,
                                   precision=precision)


def debias_teacher_record(method: str, params: dict[str, Any]) -> dict[str, Any] | None:
    """The teacher of ``kde`` with ``embedding="teacher"`` as a run records it (folder, weights' sha256, test
    accuracy), else None."""
    if method != "kde" or params.get("embedding") != "teacher":
        return None
    return teacher_record(load_teacher(params["teacher"]))


def real_sample_weights(real: ImageSet, info: DatasetInfo, method: str, params: dict[str, Any], *, model: str,
                        seed: int, device: torch.device, precision: str = "fp32") -> Tensor | None:
    """Per-image sampling weights of the real set (mean 1 per class), or None for ``method="none"``."""
    check_debias(method, params)
    if method == "none":
        return None
    settings = KDEWeighting.from_params(params)
    net = embedding_network(real, info, settings, model, seed, device, precision)
    features = embed_images(net, real.images, device, precision)
    return kde_weights(features, real.labels, info.num_classes, bandwidth=settings.bandwidth,
                       bandwidth_scale=settings.bandwidth_scale, power=settings.power)
