"""Classifier training shared by evaluation, coreset feature networks, ELF and teachers."""

from distillset.training.classifier import (
    EvalConfig,
    ModelResult,
    Precision,
    Relabel,
    TrainingCheckpoint,
    compiled,
    soft_cross_entropy,
    test_accuracy,
    train_classifier,
    training_identity,
)
from distillset.training.features import cache_dir, extract_features, trained_feature_network

__all__ = [
    "EvalConfig",
    "ModelResult",
    "Precision",
    "Relabel",
    "TrainingCheckpoint",
    "cache_dir",
    "compiled",
    "extract_features",
    "soft_cross_entropy",
    "test_accuracy",
    "train_classifier",
    "trained_feature_network",
    "training_identity",
]
