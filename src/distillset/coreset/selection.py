"""Coreset selection rules (per class): random, herding, k-center greedy.

Each rule maps the features of one class's images to the local indices it keeps, in selection order.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from distillset.registry import Registry

SelectionRule = Callable[[Tensor, int, torch.Generator], Tensor]
SELECTION_RULES: Registry[SelectionRule] = Registry("coreset method")


@SELECTION_RULES.register("random")
def random_selection(features: Tensor, budget: int, generator: torch.Generator) -> Tensor:
    """A random permutation's first ``budget`` items (as ``get_images`` in the DC/DM code)."""
    return torch.randperm(features.shape[0], generator=generator)[:budget]


@SELECTION_RULES.register("herding")
def herding_selection(features: Tensor, budget: int, generator: torch.Generator) -> Tensor:
    """Greedy running-mean matching (Welling 2009): pick the sample whose addition brings the
    mean of the selected set closest to the class mean (argmin, not DeepCore's argmax)."""
    features = features.double()
    class_mean = features.mean(dim=0)
    selected: list[int] = []
    running_sum = torch.zeros_like(class_mean)
    available = torch.ones(features.shape[0], dtype=torch.bool)
    for step in range(min(budget, features.shape[0])):
        candidate_means = (running_sum + features) / (step + 1)
        distance = (candidate_means - class_mean).pow(2).sum(dim=1)
        distance[~available] = float("inf")
        pick = int(distance.argmin())
        selected.append(pick)
        available[pick] = False
        running_sum += features[pick]
    return torch.tensor(selected, dtype=torch.long)


def _k_center(features: Tensor, budget: int, first: int) -> Tensor:
    """Farthest-first traversal (Sener & Savarese 2018) starting from ``first``."""
    features = features.double()
    selected = [first]
    min_distance = torch.cdist(features, features[first : first + 1]).squeeze(1)
    for _ in range(min(budget, features.shape[0]) - 1):
        pick = int(min_distance.argmax())
        selected.append(pick)
        min_distance = torch.minimum(min_distance, torch.cdist(features, features[pick : pick + 1]).squeeze(1))
    return torch.tensor(selected, dtype=torch.long)


@SELECTION_RULES.register("kcenter", aliases=("k-center",))
def k_center_selection(features: Tensor, budget: int, generator: torch.Generator) -> Tensor:
    """K-center greedy whose first centre is the sample nearest the class mean (DC authors' variant)."""
    first = int((features.double() - features.double().mean(0)).pow(2).sum(1).argmin())
    return _k_center(features, budget, first)


@SELECTION_RULES.register("kcenter-random")
def k_center_random_start(features: Tensor, budget: int, generator: torch.Generator) -> Tensor:
    """K-center greedy from a random first centre (DeepCore's variant)."""
    first = int(torch.randint(features.shape[0], (1,), generator=generator))
    return _k_center(features, budget, first)


def check_class_sizes(labels: Tensor, num_classes: int, ipc: int) -> None:
    """Raise ValueError unless ``ipc >= 1`` and every class has at least ``ipc`` images (a coreset picks
    real images without repeats)."""
    if ipc < 1:
        raise ValueError(f"ipc must be >= 1, got {ipc}")
    counts = torch.bincount(labels.cpu(), minlength=num_classes)
    smallest = int(counts.argmin())
    if int(counts[smallest]) < ipc:
        raise ValueError(
            f"class {smallest} has {int(counts[smallest])} images, fewer than ipc={ipc}: a coreset picks real images "
            f"without repeats; lower the ipc (or, for a long-tailed set, use a milder imbalance)"
        )


def select_per_class(
    method: str, features: Tensor, labels: Tensor, num_classes: int, ipc: int, seed: int = 0
) -> Tensor:
    """Indices (into the full set) of ``ipc`` images per class chosen by ``method``."""
    check_class_sizes(labels, num_classes, ipc)
    if features.shape[0] != labels.shape[0]:
        raise ValueError(f"features ({features.shape[0]}) and labels ({labels.shape[0]}) differ in length")
    rule = SELECTION_RULES.get(method)
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for c in range(num_classes):
        members = torch.nonzero(labels == c, as_tuple=False).flatten()
        chosen.append(members[rule(features[members].flatten(1), ipc, generator)])
    return torch.cat(chosen)
