"""Evaluation: the standard protocol, ELF and the fair (DD-Ranking) metrics."""

from distillset.evaluate.bias import BiasEvalResult, evaluate_biased
from distillset.evaluate.elf import ELFConfig, ELFLoss, ELFNetwork, evaluate_elf, feature_distance
from distillset.evaluate.metrics import (
    FairMetrics,
    fair_metrics,
    hard_label_recovery,
    improvement_over_random,
    label_robust_score,
)
from distillset.evaluate.protocol import EvalResult, evaluate_synthetic
from distillset.training import EvalConfig, ModelResult

__all__ = [
    "BiasEvalResult",
    "ELFConfig",
    "ELFLoss",
    "ELFNetwork",
    "EvalConfig",
    "EvalResult",
    "FairMetrics",
    "ModelResult",
    "evaluate_biased",
    "evaluate_elf",
    "evaluate_synthetic",
    "fair_metrics",
    "feature_distance",
    "hard_label_recovery",
    "improvement_over_random",
    "label_robust_score",
]
