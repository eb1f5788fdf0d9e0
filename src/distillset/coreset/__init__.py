"""Coreset baselines: select real images per class (random, herding, k-center)."""

from __future__ import annotations

from pathlib import Path

import torch

from distillset.coreset.selection import SELECTION_RULES, check_class_sizes, select_per_class
from distillset.data.base import DatasetSplits, ImageSet
from distillset.training import extract_features, trained_feature_network
from distillset.training.teachers import Teacher, teacher_of


def select_coreset(
    splits: DatasetSplits,
    method: str,
    ipc: int,
    *,
    seed: int = 0,
    feature_model: str = "convnet3",
    feature_epochs: int = 3,
    teacher: str | Path | Teacher | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
    precision: str = "auto",
    compile: bool | None = None,
) -> ImageSet:
    """``ipc`` real training images per class chosen by ``method`` (features only where the rule needs them;
    ``precision`` and ``compile`` are the feature network's training settings). With ``teacher`` (a teacher
    folder or a loaded :class:`~distillset.training.teachers.Teacher` of the same dataset) the features are the
    teacher's ``net.embed`` instead of a feature network trained for ``feature_epochs``."""
    SELECTION_RULES.get(method)  # fail fast on an unknown name or too small a class, before any training
    train = splits.train
    check_class_sizes(train.labels, splits.info.num_classes, ipc)
    if method == "random":
        if teacher is not None:
            raise ValueError("the random rule uses no features, so a teacher has nothing to do; drop the teacher "
                             "or pick herding, kcenter or kcenter-random")
        features = train.images.flatten(1)
    elif teacher is not None:
        features = extract_features(teacher_of(teacher, splits.info, use="coreset", device=device).net, train.images)
    else:
        net = trained_feature_network(splits, feature_model, epochs=feature_epochs, seed=seed, device=device,
                                      progress=progress, precision=precision, compile=compile)
        features = extract_features(net, train.images)
    indices = select_per_class(method, features, train.labels, splits.info.num_classes, ipc, seed=seed)
    return train.subset(indices)


__all__ = ["SELECTION_RULES", "select_coreset", "select_per_class"]
