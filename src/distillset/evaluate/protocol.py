"""The standard DC/DM evaluation protocol: train fresh networks on a (synthetic) set, test on real data.

The training recipe (:class:`~distillset.training.EvalConfig`, defaults of ``evaluate_synset`` of
VICO-UoE/DatasetCondensation) lives in :mod:`distillset.training`; this module runs it over several models,
resumably, and aggregates their final-epoch test accuracies.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from distillset.data.base import DatasetInfo, ImageSet
from distillset.engine.distributed import RankGroup
from distillset.nets import get_network
from distillset.training import (
    EvalConfig,
    ModelResult,
    Relabel,
    TrainingCheckpoint,
    compiled,
    test_accuracy,
    train_classifier,
    training_identity,
)


@dataclass
class EvalResult:
    """Accuracies (percent) of ``num_models`` fresh networks, final epoch."""

    config: dict[str, Any]
    models: list[ModelResult] = field(default_factory=list)

    @property
    def accuracies(self) -> list[float]:
        return [m.accuracy for m in self.models]

    @property
    def mean(self) -> float:
        return float(torch.tensor(self.accuracies, dtype=torch.float64).mean())

    @property
    def std(self) -> float:
        """Population std over models, as ``np.std`` in the reference code."""
        acc = torch.tensor(self.accuracies, dtype=torch.float64)
        return float(acc.std(unbiased=False)) if len(acc) > 1 else 0.0

    @property
    def per_class(self) -> list[float]:
        return torch.tensor([m.per_class for m in self.models], dtype=torch.float64).mean(0).tolist()

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "accuracy_reported": "final_epoch",
            "mean": self.mean,
            "std": self.std,
            "n": len(self.models),
            "accuracies": self.accuracies,
            "per_class": self.per_class,
            "train_seconds": [m.train_seconds for m in self.models],
        }


def evaluate_synthetic(
    synthetic: ImageSet,
    test: ImageSet,
    info: DatasetInfo,
    config: EvalConfig | None = None,
    *,
    device: str | torch.device = "cpu",
    progress: bool = False,
    on_model_done: Callable[[int, ModelResult], None] | None = None,
    wrap_network: Callable[[nn.Module, int], nn.Module] | None = None,
    extra_loss: Callable[[nn.Module, Tensor, Tensor], Tensor] | None = None,
    checkpoint_dir: str | Path | None = None,
    group: RankGroup | None = None,
    relabel: Relabel | None = None,
    variant: dict[str, Any] | None = None,
) -> EvalResult:
    """Train ``config.num_models`` fresh networks on ``synthetic`` and test each on ``test``.

    Model ``i`` is seeded ``config.seed * 1000 + i`` (weights, batches, augmentation). ``wrap_network(net, seed)``
    and ``extra_loss`` let an evaluation variant (ELF) change the network and the loss while staying paired;
    ``relabel`` trains on a teacher's labels of every augmented batch instead of the set's labels.
    With ``checkpoint_dir`` the evaluation is resumable: each model's training is checkpointed there
    (:class:`TrainingCheckpoint`, ``model<i>.*``), and a model tested by an earlier call is not trained again;
    ``variant`` (the settings of ``wrap_network`` / ``extra_loss``) is part of the checkpoint's identity.
    Under torchrun (``group``) rank ``r`` of ``W`` trains models ``r, r + W, ...`` and every rank returns all
    results; a model's seed does not depend on the rank, so the result is the single-process one.
    """
    device = torch.device(device)
    config = (config or EvalConfig()).resolved(device)  # records the precision and compilation that run
    check_compatible(synthetic, info)
    result = EvalResult(config=asdict(config))
    own = range(config.num_models) if group is None else range(group.rank, config.num_models, group.world_size)
    for model_index in own:
        seed = config.seed * 1000 + model_index
        generator = torch.Generator().manual_seed(seed)
        net = get_network(config.model, info.channels, info.num_classes, info.image_size, seed=seed)
        if wrap_network is not None:
            net = wrap_network(net, seed)
        net = net.to(device)
        checkpoint = None
        if checkpoint_dir is not None:
            identity = training_identity(net, synthetic, config, generator, relabel, variant)
            checkpoint = TrainingCheckpoint(Path(checkpoint_dir) / f"model{model_index}", identity)
        model_result = checkpoint.finished() if checkpoint is not None else None
        if model_result is None:
            start = time.perf_counter()
            forward = compiled(net, config)
            train_classifier(net, synthetic, config, generator=generator, device=device, progress=progress,
                             forward=forward, extra_loss=extra_loss, checkpoint=checkpoint, relabel=relabel)
            accuracy, per_class = test_accuracy(net, test, info.num_classes, device=device, config=config,
                                                forward=forward)
            earlier = checkpoint.earlier_seconds if checkpoint is not None else 0.0
            model_result = ModelResult(accuracy, per_class, earlier + time.perf_counter() - start)
        result.models.append(model_result)
        if on_model_done is not None:
            on_model_done(model_index, model_result)
        if checkpoint is not None:
            checkpoint.finish(model_result)
    result.config["compile"] = config.resolved(device).compile  # False if compilation fell back to eager
    if group is not None:  # every rank's models, in model order
        gathered = dict(pair for pairs in group.all_gather_objects(list(zip(own, result.models))) for pair in pairs)
        result.models = [gathered[index] for index in range(config.num_models)]
    return result


def check_compatible(synthetic: ImageSet, info: DatasetInfo) -> None:
    expected = (info.channels, *info.image_size)
    if tuple(synthetic.images.shape[1:]) != expected:
        raise ValueError(
            f"synthetic images have shape {tuple(synthetic.images.shape[1:])} but dataset '{info.name}' "
            f"expects {expected}; evaluate against the dataset the set was distilled from"
        )
    if not torch.isfinite(synthetic.images).all():
        raise ValueError("synthetic images contain NaN or Inf values; the set is corrupt")
    if len(synthetic) and int(synthetic.labels.max()) >= info.num_classes:
        raise ValueError(
            f"label {int(synthetic.labels.max())} out of range for {info.num_classes} classes of '{info.name}'"
        )


def format_mean_std(mean: float, std: float) -> str:
    return f"{mean:.1f} ± {std:.1f}" if math.isfinite(mean) else "n/a"
