"""Hyperbolic pruning of a labelled image set (HDD, Li et al. NeurIPS 2025, "pruning in hyperbolic space").

The paper reports that keeping 20% of the core set, chosen in hyperbolic space, retains accuracy; the
released code has no pruning, so the rule here is this package's reading (docs/hdd.md, "Pruning"):
embed each class with random networks, lift the features with HDD's :func:`expmap0`, and keep, per
class, the ``keep_ratio`` fraction closest (geodesic distance, averaged over the nets) to the class's
:func:`hyperbolic_centroid`, i.e. drop the samples farthest from the prototype that HDD matches; or
(``selection="spread"``) keep images at evenly spaced ranks of that distance, central to peripheral.
:func:`random_prune` is the baseline at the same per-class counts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from distillset.data.base import DatasetInfo, ImageSet
from distillset.geometry.lorentz import (
    UNIT_MEAN_NORM,
    check_curvature,
    check_feature_scale,
    check_max_norm,
    distance_to_origin,
    expmap0,
    geodesic_distance,
    hyperbolic_centroid,
)
from distillset.nets import get_network
from distillset.training.teachers import Teacher, teacher_of, teacher_record

Reference = Literal["centroid", "origin"]
Selection = Literal["central", "spread"]


def kept_count(class_size: int, keep_ratio: float) -> int:
    """Images kept from a class of ``class_size``: ``keep_ratio * class_size`` rounded half up, at least 1."""
    return max(1, math.floor(keep_ratio * class_size + 0.5))


def keep_lowest_scores(scores: Tensor, labels: Tensor, keep_ratio: float) -> Tensor:
    """Per class, the indices of the :func:`kept_count` lowest ``scores`` (ties: lower index first).

    Returns the kept indices into ``labels``, sorted ascending (int64, on ``labels``' device).
    """
    return _keep_ranks(scores, labels, keep_ratio, lambda n, k: torch.arange(k))


def keep_spread_over_scores(scores: Tensor, labels: Tensor, keep_ratio: float) -> Tensor:
    """Per class, :func:`kept_count` images at evenly spaced ranks of ``scores`` (rank ``floor((i + 1/2) n / k)``
    for i < k of n), so the kept images cover the whole range of the score, central to peripheral: stratified
    selection over a score, as in coverage-centric coreset selection (Zheng et al., ICLR 2023).

    Returns the kept indices into ``labels``, sorted ascending (int64, on ``labels``' device).
    """
    return _keep_ranks(scores, labels, keep_ratio,
                       lambda n, k: torch.floor((torch.arange(k, dtype=torch.float64) + 0.5) * n / k).long())


def _keep_ranks(scores: Tensor, labels: Tensor, keep_ratio: float, ranks: Callable[[int, int], Tensor]) -> Tensor:
    """Per class of ``n`` members, keep those at ``ranks(n, k)`` in ascending score order (stable), k kept."""
    _check_keep_ratio(keep_ratio)
    _check_labels(labels)
    if scores.shape != labels.shape:
        raise ValueError(
            f"scores must have one entry per label, shape {tuple(labels.shape)}, got {tuple(scores.shape)}"
        )
    kept = []
    for c in torch.unique(labels).tolist():
        members = torch.nonzero(labels == c).flatten()
        order = torch.argsort(scores[members].to(labels.device), stable=True)
        positions = ranks(members.numel(), kept_count(members.numel(), keep_ratio))
        kept.append(members[order[positions.to(labels.device)]])
    return torch.sort(torch.cat(kept)).values


def random_prune(labels: Tensor, keep_ratio: float, seed: int = 0) -> Tensor:
    """Baseline: a uniformly random subset of each class, same per-class counts as :func:`hyperbolic_prune`."""
    _check_labels(labels)
    generator = torch.Generator().manual_seed(seed)
    return keep_lowest_scores(torch.rand(labels.shape, generator=generator), labels.cpu(), keep_ratio).to(labels.device)


def hyperbolic_prune(
    images: Tensor,
    labels: Tensor,
    keep_ratio: float,
    *,
    feature_net_factory: Callable[[], nn.Module],
    curvature_k: float = 1.0,
    max_norm: float | None = 10.0,
    feature_scale: float | str = 1.0,
    reference: Reference = "centroid",
    num_nets: int = 3,
    seed: int = 0,
    batch_size: int = 512,
    selection: Selection = "central",
    train_mode: bool = True,
) -> Tensor:
    """Indices (sorted, int64) of the images kept, per class the ``keep_ratio`` fraction (at least one) by
    :func:`hyperbolic_scores`: the lowest scores (``selection="central"``, the images nearest the class's
    hyperbolic centroid) or evenly spread over the score's ranks (``"spread"``, :func:`keep_spread_over_scores`,
    central to peripheral). Works on any labelled set, real or synthetic."""
    _check_keep_ratio(keep_ratio)
    if selection not in ("central", "spread"):
        raise ValueError(f"unknown selection {selection!r}; choose 'central' or 'spread'")
    scores = hyperbolic_scores(
        images, labels,
        feature_net_factory=feature_net_factory, curvature_k=curvature_k, max_norm=max_norm,
        feature_scale=feature_scale, reference=reference, num_nets=num_nets, seed=seed, batch_size=batch_size,
        train_mode=train_mode,
    )
    keep = keep_lowest_scores if selection == "central" else keep_spread_over_scores
    return keep(scores, labels.cpu(), keep_ratio).to(labels.device)


def hyperbolic_scores(
    images: Tensor,
    labels: Tensor,
    *,
    feature_net_factory: Callable[[], nn.Module],
    curvature_k: float = 1.0,
    max_norm: float | None = 10.0,
    feature_scale: float | str = 1.0,
    reference: Reference = "centroid",
    num_nets: int = 3,
    seed: int = 0,
    batch_size: int = 512,
    train_mode: bool = True,
) -> Tensor:
    """Per-image peripherality (docs/hdd.md Eq. 8; float64, CPU, shape ``(N,)``): geodesic distance of the
    lifted feature to its class's hyperbolic centroid (``reference='centroid'``) or to the origin
    (``'origin'``, which is ``min(||s v||, max_norm sqrt(k))``, a feature-norm ranking that ties when every
    feature is clamped), averaged over ``num_nets`` networks.

    Network ``i`` is ``feature_net_factory()`` built under ``torch.manual_seed(seed + i)`` (the global RNG
    is restored afterwards); it must have an ``embed(x) -> (batch, dim)`` method and is run without gradients
    in train mode, as in DM (``train_mode=False``: eval mode, for a trained network such as a teacher, whose
    normalisation statistics are then used and left unchanged). Features are scaled by ``feature_scale`` (a number, or
    ``'unit-mean-norm'``: 1 / mean feature norm of the whole set under that net, which costs a second
    embedding pass) and lifted with :func:`expmap0` (``curvature_k``, ``max_norm``) in float64, exactly as
    the ``hdd`` objective does.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    _check_labels(labels)
    if labels.shape[0] != images.shape[0]:
        raise ValueError(f"need one label per image: {images.shape[0]} images, {labels.shape[0]} labels")
    if reference not in ("centroid", "origin"):
        raise ValueError(f"reference must be 'centroid' or 'origin', got {reference!r}")
    if not (isinstance(num_nets, int) and num_nets >= 1):
        raise ValueError(f"num_nets must be an integer >= 1, got {num_nets!r}")
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    curvature_k = check_curvature(curvature_k)
    max_norm = check_max_norm(max_norm)
    feature_scale = check_feature_scale(feature_scale)

    class_members = [torch.nonzero(labels == c).flatten() for c in torch.unique(labels).tolist()]
    scores = torch.zeros(images.shape[0], dtype=torch.float64)
    for net_index in range(num_nets):
        with torch.random.fork_rng():
            torch.manual_seed(seed + net_index)
            net = feature_net_factory()
        embed = _embedder(net, images, batch_size, train_mode)
        if feature_scale == UNIT_MEAN_NORM:
            norm_sum = sum(float(torch.linalg.vector_norm(embed(m), dim=-1).sum()) for m in class_members)
            scale = images.shape[0] / norm_sum
        else:
            scale = feature_scale
        for members in class_members:
            points = expmap0(scale * embed(members), curvature_k, max_norm=max_norm)
            if reference == "centroid":
                distances = geodesic_distance(points, hyperbolic_centroid(points, curvature_k), curvature_k)
            else:
                distances = distance_to_origin(points, curvature_k)
            scores[members.cpu()] += distances.cpu() / num_nets
    return scores


def _embedder(net: nn.Module, images: Tensor, batch_size: int, train_mode: bool) -> Callable[[Tensor], Tensor]:
    """``embed(indices)``: float64 features ``(len(indices), dim)`` of ``images[indices]`` under ``net``."""
    if not callable(getattr(net, "embed", None)):
        raise TypeError(f"feature_net_factory must return a network with an embed(x) method, got {type(net).__name__}")
    net = net.to(images.device).train(train_mode)

    @torch.no_grad()
    def embed(indices: Tensor) -> Tensor:
        batches = [images[indices[i : i + batch_size]] for i in range(0, indices.numel(), batch_size)]
        return torch.cat([net.embed(batch).flatten(1) for batch in batches]).to(torch.float64)

    return embed


def _check_keep_ratio(keep_ratio: float) -> None:
    if isinstance(keep_ratio, bool) or not (isinstance(keep_ratio, (int, float)) and 0 < keep_ratio <= 1):
        raise ValueError(f"keep_ratio must be in (0, 1] (the fraction of each class kept), got {keep_ratio!r}")


def _check_labels(labels: Tensor) -> None:
    if labels.ndim != 1 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must be a 1-D integer tensor, got dtype {labels.dtype} shape {tuple(labels.shape)}")


PRUNE_RULES = ("hyperbolic", "hyperbolic-spread", "random")


def prune_pool(
    train: ImageSet,
    info: DatasetInfo,
    keep_ratio: float,
    rule: str = "hyperbolic",
    *,
    model: str = "convnet3",
    num_nets: int = 3,
    teacher: str | Path | Teacher | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> tuple[ImageSet, dict[str, object]]:
    """The real pool that distillation matches against, pruned to ``keep_ratio`` per class by ``rule``
    (``hyperbolic``: :func:`hyperbolic_prune` with random ``model`` networks, keeping the most central images;
    ``hyperbolic-spread``: the same scores, kept evenly over their ranks; ``random``: :func:`random_prune`).
    With ``teacher`` (a teacher folder or a loaded :class:`~distillset.training.teachers.Teacher` of ``info``'s
    dataset) the hyperbolic scores use the teacher's embedding (one network, eval mode) instead of ``num_nets``
    random ones. Returns the kept subset and a record of what was done (for manifests)."""
    if rule not in PRUNE_RULES:
        raise ValueError(f"unknown pruning rule {rule!r}; choose one of: {', '.join(PRUNE_RULES)}")
    record: dict[str, object] = {"rule": rule, "keep_ratio": keep_ratio}
    if rule == "random":
        if teacher is not None:
            raise ValueError("the random pruning rule uses no features, so a teacher has nothing to do; drop the "
                             "teacher or pick hyperbolic or hyperbolic-spread")
        keep = random_prune(train.labels, keep_ratio, seed=seed)
    else:
        if teacher is not None:
            loaded = teacher_of(teacher, info, use="pruning", device=device)
            num_nets, record["teacher"] = 1, teacher_record(loaded)

            def factory() -> nn.Module:
                return loaded.net
        else:
            def factory() -> nn.Module:
                return get_network(model, info.channels, info.num_classes, info.image_size).to(device)

        keep = hyperbolic_prune(train.images, train.labels, keep_ratio, feature_net_factory=factory,
                                num_nets=num_nets, seed=seed, selection="central" if rule == "hyperbolic" else "spread",
                                train_mode=teacher is None)
    return train.subset(keep), {**record, "kept": int(len(keep)), "num_nets": num_nets}
