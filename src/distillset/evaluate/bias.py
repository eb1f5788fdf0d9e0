"""Bias-aware evaluation: accuracy on bias-aligned and bias-conflicting test images (docs/biased.md).

A model trained on a (synthetic) set is tested on the biased dataset's test split (the paper's: every image
carries another class's attribute, ``test_rho = 0``) and on its aligned copy (the same images, each with its own
class's attribute). Images are grouped by ``attribute == label`` over both:

* ``aligned``: accuracy on bias-aligned images, ``conflicting``: on bias-conflicting ones (with ``test_rho = 0``
  this is the test split's accuracy, Lu et al.'s metric);
* ``unbiased = aligned / A + conflicting * (A - 1) / A`` with ``A`` attributes: the expected accuracy on a test set
  whose attributes are uniform, independent of the class (``rho = 1 / A``, e.g. 0.1), the headline number.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from distillset.data.base import ImageSet
from distillset.data.biased import BiasedSplits
from distillset.evaluate.protocol import EvalResult, evaluate_synthetic
from distillset.io import atomic_write_json
from distillset.training import EvalConfig, ModelResult, test_accuracy

GROUPS = ("unbiased", "aligned", "conflicting")


@dataclass
class BiasEvalResult:
    """Per-model accuracies (percent) by group, with the protocol's :class:`EvalResult` on the test split."""

    protocol: EvalResult
    groups: list[dict[str, float]] = field(default_factory=list)

    def values(self, group: str) -> list[float]:
        return [model[group] for model in self.groups]

    def mean(self, group: str) -> float:
        return float(torch.tensor(self.values(group), dtype=torch.float64).mean())

    def std(self, group: str) -> float:
        """Population std over models (as :attr:`EvalResult.std`)."""
        values = torch.tensor(self.values(group), dtype=torch.float64)
        return float(values.std(unbiased=False)) if len(values) > 1 else 0.0

    def to_dict(self) -> dict[str, Any]:
        summary = {group: {"mean": self.mean(group), "std": self.std(group), "values": self.values(group)}
                   for group in GROUPS}
        return {**summary, "n": len(self.groups), "test_split": self.protocol.to_dict()}


def group_accuracies(net: nn.Module, splits: BiasedSplits, test_split_accuracy: float, *, device: torch.device,
                     config: EvalConfig) -> dict[str, float]:
    """Accuracy (percent) on the aligned and the conflicting images of the test split and its aligned copy, from
    the model's accuracy on the test split and passes over the aligned copy and the test split's aligned images
    (none with ``test_rho = 0``); ``unbiased`` mixes them (one bias attribute per class: ``A = num_classes``)."""
    classes = splits.info.num_classes

    def correct(images: ImageSet) -> float:
        return test_accuracy(net, images, classes, device=device, config=config)[0] * len(images) / 100

    aligned_in_test = splits.aligned_mask("test")
    aligned_correct, aligned_total = correct(splits.aligned_test), len(splits.aligned_test)
    conflicting_correct = test_split_accuracy * len(splits.test) / 100
    if aligned_in_test.any():
        in_test = correct(splits.test.subset(torch.nonzero(aligned_in_test).flatten()))
        aligned_correct, aligned_total = aligned_correct + in_test, aligned_total + int(aligned_in_test.sum())
        conflicting_correct -= in_test
    conflicting_total = int((~aligned_in_test).sum())
    aligned = 100 * aligned_correct / aligned_total
    conflicting = 100 * conflicting_correct / conflicting_total if conflicting_total else math.nan
    return {"unbiased": (aligned + (classes - 1) * conflicting) / classes, "aligned": aligned,
            "conflicting": conflicting}


def evaluate_biased(
    synthetic: ImageSet,
    splits: BiasedSplits,
    config: EvalConfig | None = None,
    *,
    device: str | torch.device = "cpu",
    progress: bool = False,
    checkpoint_dir: str | Path | None = None,
) -> BiasEvalResult:
    """:func:`~distillset.evaluate.evaluate_synthetic` on the biased test split, plus each model's aligned /
    conflicting / unbiased accuracy. Resumable as the protocol is: with ``checkpoint_dir`` a model's groups are kept
    in ``model<i>.groups.json`` (written before the protocol marks the model tested)."""
    device = torch.device(device)
    config = (config or EvalConfig()).resolved(device)
    trained: list[nn.Module] = []
    groups: list[dict[str, float]] = []

    def keep(net: nn.Module, seed: int) -> nn.Module:
        trained.append(net)
        return net

    def record(index: int, result: ModelResult) -> None:
        path = Path(checkpoint_dir) / f"model{index}.groups.json" if checkpoint_dir is not None else None
        if path is not None and path.is_file():  # tested by an earlier call
            groups.append(json.loads(path.read_text()))
            return
        values = group_accuracies(trained[index].to(device), splits, result.accuracy, device=device, config=config)
        if path is not None:
            atomic_write_json(path, values)
        groups.append(values)

    protocol = evaluate_synthetic(synthetic, splits.test, splits.info, config, device=device, progress=progress,
                                  on_model_done=record, wrap_network=keep, checkpoint_dir=checkpoint_dir)
    return BiasEvalResult(protocol, groups)
