"""Evaluation: the standard protocol and metrics."""

from distillset.evaluate.protocol import (
    EvalConfig,
    EvalResult,
    ModelResult,
    evaluate_synthetic,
    soft_cross_entropy,
    test_accuracy,
    train_classifier,
)

__all__ = [
    "EvalConfig",
    "EvalResult",
    "ModelResult",
    "evaluate_synthetic",
    "soft_cross_entropy",
    "test_accuracy",
    "train_classifier",
]
