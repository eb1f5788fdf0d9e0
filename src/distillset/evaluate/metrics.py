"""Fair metrics beside plain accuracy, after DD-Ranking (Li et al., arXiv 2505.13300; docs/evaluation.md).

Per evaluation round i (one trained model per set and round), with accuracies in percent:

* IOR_i = Acc(syn-any)_i - Acc(rdm-any)_i: gain over a class-balanced random real subset of the same
  size, drawn afresh each round, trained and tested under the same evaluation (architecture, epochs,
  augmentation, labels, ELF or not);
* HLR_i = Acc(real-hard) - Acc(syn-hard)_i: the gap to a network trained on the whole real train split;
* LRS_i = 100 * (exp(a_i) - exp(-1)) / (e - exp(-1)), a_i = (w * IOR_i - (1 - w) * HLR_i) / 100, w = 0.5.

The accuracies divided by 100 keep a_i in [-1, 1] and LRS in [0, 100], the range DD-Ranking's
documentation states. All accuracies are final-epoch accuracies (DD-Ranking reports the best
test accuracy over epochs, tested every 20; the numbers are therefore not interchangeable).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from distillset.coreset import select_coreset
from distillset.data.base import DatasetSplits, ImageSet
from distillset.evaluate.protocol import EvalResult, evaluate_synthetic
from distillset.training import EvalConfig, test_accuracy, trained_feature_network

Evaluator = Callable[[ImageSet, EvalConfig], EvalResult]
"""Trains ``config.num_models`` fresh networks on a set and tests them (e.g. evaluate_synthetic or ELF)."""

RandomLabeler = Callable[[ImageSet], Tensor]
"""Gives a random real subset the soft labels a soft-label method would give it (e.g. a teacher's softmax)."""

DEFAULT_WEIGHT = 0.5  # DD-Ranking leaderboard default w


def improvement_over_random(synthetic_accuracy: float, random_accuracy: float) -> float:
    """IOR = Acc(syn-any) - Acc(rdm-any), percentage points."""
    return synthetic_accuracy - random_accuracy


def hard_label_recovery(full_data_accuracy: float, synthetic_hard_accuracy: float) -> float:
    """HLR = Acc(real-hard) - Acc(syn-hard), percentage points (lower is better)."""
    return full_data_accuracy - synthetic_hard_accuracy


def label_robust_score(ior: float, hlr: float, weight: float = DEFAULT_WEIGHT) -> float:
    """LRS = 100 (e^a - e^-1) / (e - e^-1), a = (w IOR - (1 - w) HLR) / 100; IOR and HLR in points."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"the LRS weight w must lie in [0, 1], got {weight}")
    alpha = (weight * ior - (1.0 - weight) * hlr) / 100.0
    return 100.0 * (math.exp(alpha) - math.exp(-1.0)) / (math.e - math.exp(-1.0))


def _mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and population std, as the accuracies of :class:`EvalResult`."""
    tensor = torch.tensor(values, dtype=torch.float64)
    return float(tensor.mean()), float(tensor.std(unbiased=False)) if len(values) > 1 else 0.0


@dataclass
class FairMetrics:
    """Per-round accuracies (percent, final epoch) and the IOR / HLR / LRS derived from them."""

    synthetic: list[float]
    synthetic_hard: list[float]
    random: list[float]
    full_data_accuracy: float
    full_data_source: str
    weight: float = DEFAULT_WEIGHT
    ior_labels: str = "hard"

    def __post_init__(self) -> None:
        if not len(self.synthetic) == len(self.synthetic_hard) == len(self.random) > 0:
            raise ValueError(
                f"need the same positive number of rounds for syn, syn-hard and random accuracies, got "
                f"{len(self.synthetic)}, {len(self.synthetic_hard)}, {len(self.random)}"
            )
        if not 0.0 <= self.weight <= 1.0:
            raise ValueError(f"the LRS weight w must lie in [0, 1], got {self.weight}")

    @property
    def ior(self) -> list[float]:
        return [improvement_over_random(s, r) for s, r in zip(self.synthetic, self.random)]

    @property
    def hlr(self) -> list[float]:
        return [hard_label_recovery(self.full_data_accuracy, s) for s in self.synthetic_hard]

    @property
    def lrs(self) -> list[float]:
        return [label_robust_score(i, h, self.weight) for i, h in zip(self.ior, self.hlr)]

    def to_dict(self) -> dict[str, Any]:
        summary: dict[str, Any] = {}
        for name, values in (("accuracy", self.synthetic), ("random_accuracy", self.random),
                             ("ior", self.ior), ("hlr", self.hlr), ("lrs", self.lrs)):
            summary[f"{name}_mean"], summary[f"{name}_std"] = _mean_std(values)
            summary[name] = values
        return {
            **summary,
            "synthetic_hard_accuracy": self.synthetic_hard,
            "full_data_accuracy": self.full_data_accuracy,
            "full_data_source": self.full_data_source,
            "weight": self.weight,
            "ior_labels": self.ior_labels,
            "rounds": len(self.synthetic),
            "accuracy_reported": "final_epoch",
        }


def random_real_subset(splits: DatasetSplits, synthetic: ImageSet, seed: int) -> ImageSet:
    """A class-balanced random subset of the real train split with the synthetic set's size."""
    num_classes = splits.info.num_classes
    counts = synthetic.class_counts(num_classes)
    if len(synthetic) == 0 or bool((counts != counts[0]).any()):
        raise ValueError(
            f"IOR compares with a class-balanced random subset of the same size, but the set has per-class "
            f"counts {counts.tolist()}; evaluate a set with the same number of images in every class"
        )
    return select_coreset(splits, "random", int(counts[0]), seed=seed)


def full_data_accuracy(
    splits: DatasetSplits, model: str, *, epochs: int = 3, seed: int = 0, device: str | torch.device = "cpu"
) -> float:
    """Test accuracy (percent) of ``model`` trained on the whole real train split, hard labels.

    Uses the cached network of :func:`~distillset.training.trained_feature_network` (SGD, no augmentation,
    ``epochs`` epochs): a different recipe from the synthetic-set protocol, as DD-Ranking's real-data
    training also is.
    """
    device = torch.device(device)
    net = trained_feature_network(splits, model, epochs=epochs, seed=seed, device=device)
    config = EvalConfig(model=model)
    accuracy, _ = test_accuracy(net, splits.test, splits.info.num_classes, device=device, config=config)
    return accuracy


def fair_metrics(
    synthetic: ImageSet,
    splits: DatasetSplits,
    config: EvalConfig,
    *,
    evaluate: Evaluator | None = None,
    synthetic_result: EvalResult | None = None,
    full_accuracy: float | None = None,
    full_data_epochs: int = 3,
    weight: float = DEFAULT_WEIGHT,
    random_labeler: RandomLabeler | None = None,
    device: str | torch.device = "cpu",
) -> FairMetrics:
    """IOR, HLR and LRS of ``synthetic`` over ``config.num_models`` rounds.

    ``evaluate`` is the evaluation under comparison (default: the plain protocol); it is applied to the
    synthetic set (unless ``synthetic_result`` already holds that evaluation), to one fresh random subset
    per round (seed ``config.seed * 1000 + i``) and, for a soft-labelled set, to its images with hard
    labels. ``full_accuracy`` (percent) skips training on the whole real data for HLR.
    A soft-labelled set needs ``random_labeler`` so the random subsets are labelled the same way.
    """
    if evaluate is None:
        def evaluate(images: ImageSet, cfg: EvalConfig) -> EvalResult:
            return evaluate_synthetic(images, splits.test, splits.info, cfg, device=device)

    soft = synthetic.soft_labels is not None
    if soft and random_labeler is None:
        raise ValueError(
            "the set has soft labels, so IOR must label the random subsets the same way: pass random_labeler "
            "(e.g. the teacher's softmax), or evaluate the set with hard labels only"
        )
    if synthetic_result is None:
        synthetic_result = evaluate(synthetic, config)
    if len(synthetic_result.models) != config.num_models:
        raise ValueError(
            f"synthetic_result has {len(synthetic_result.models)} models but config.num_models={config.num_models}"
        )
    random_accuracies = []
    for round_index in range(config.num_models):
        round_seed = config.seed * 1000 + round_index
        subset = random_real_subset(splits, synthetic, seed=round_seed)
        if random_labeler is not None:
            subset = ImageSet(subset.images, subset.labels, random_labeler(subset))
        random_accuracies.append(evaluate(subset, replace(config, num_models=1, seed=round_seed)).mean)
    hard_result = evaluate(ImageSet(synthetic.images, synthetic.labels), config) if soft else synthetic_result
    if full_accuracy is None:
        full_accuracy = full_data_accuracy(
            splits, config.model, epochs=full_data_epochs, seed=config.seed, device=device
        )
        source = f"{config.model} trained {full_data_epochs} epoch(s) on the whole train split (no augmentation)"
    else:
        source = "given"
    return FairMetrics(
        synthetic=synthetic_result.accuracies,
        synthetic_hard=hard_result.accuracies,
        random=random_accuracies,
        full_data_accuracy=float(full_accuracy),
        full_data_source=source,
        weight=weight,
        ior_labels="soft (random_labeler)" if soft else "hard",
    )
