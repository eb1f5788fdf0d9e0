"""Distribution matching (Zhao & Bilen, WACV 2023, Eq. 4): linear-kernel MMD per class."""

from __future__ import annotations

from torch import Tensor

from distillset.objectives import OBJECTIVES
from distillset.objectives.base import MatchingContext, MatchingObjective


def mean_embedding_distance(real: Tensor, synthetic: Tensor) -> Tensor:
    """Squared L2 distance between the mean embeddings, summed over feature dims."""
    return (real.mean(dim=0) - synthetic.mean(dim=0)).pow(2).sum()


@OBJECTIVES.register("dm")
class DistributionMatching(MatchingObjective):
    """L_c = || mean psi(real_c) - mean psi(syn_c) ||^2, summed over classes."""

    name = "dm"

    def class_loss(self, real: Tensor, synthetic: Tensor, class_index: int, context: MatchingContext) -> Tensor:
        return mean_embedding_distance(real.float(), synthetic.float())
