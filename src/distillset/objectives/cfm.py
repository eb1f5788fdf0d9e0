"""``cfm-dm``: our variant of Curriculum Frequency Matching (Bo, Liu & Wang, ICLR 2026, arXiv:2503.01212;
docs/unidd_cfm.md Eq. 13) in the DM loop. The paper's own pipeline, a trained teacher and its soft labels, is
``cfm-teacher`` (engine/teacher_matching.py); this one matches a fresh random network's embedding each step.
``cfm`` stays an alias of ``cfm-dm`` because the published sets and results carry that method name.

CFM matches the ridge-filtered statistics of UniDD (unidd.py, Eqs. 11-12) with a beta that moves
during distillation: large beta first (nearly flat filter, low frequencies), small beta last
(high-pass), so one synthetic set is matched on both bands. The official code decays beta with

    beta_b = beta * (1 + cos(pi b / B)) / 2                                            (Eq. 13)

over its per-IPC batches b: each batch of images (one per class) is made at its own beta, so the set
mixes low-pass and high-pass images. ``schedule_over="iterations"`` (the default, our reading in the
DM loop) moves beta with the engine's iteration / total_iterations, so every image ends high-pass;
``schedule_over="slots"`` is the official form: each class's synthetic images are split into groups
of slots (contiguous, one group per slot unless ``slot_groups`` is set), group g is matched at beta
of progress g / G for the whole run, and the loss is the mean over groups. A group's statistics come
from a few images per class, so its loss and gradients are larger than the one-set loss (about 15x at
IPC 10, one image per class per group): lower ``lr_img`` accordingly. The schedule is configurable
(linear, cosine, step; linear or log interpolation; start and end values).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from distillset.objectives import OBJECTIVES
from distillset.objectives.base import MatchingContext
from distillset.objectives.unidd import (
    DEFAULT_HIGHPASS_BETA,
    DEFAULT_LOWPASS_BETA,
    RidgeFilterMatching,
    check_relative_beta,
)

SCHEDULE_SHAPES = ("linear", "cosine", "step")
INTERPOLATIONS = ("linear", "log")
SCHEDULE_AXES = ("iterations", "slots")


@dataclass(frozen=True)
class BetaSchedule:
    """beta(t) for progress t in [0, 1]: from ``start`` (t = 0) to ``end`` (t = 1).

    The shape gives the fraction s(t) of the way: linear s = t; cosine s = (1 - cos(pi t)) / 2
    (Eq. 13 when ``end`` -> 0 with linear interpolation); step: ``num_stages`` equal stages with
    s = stage / (num_stages - 1). Interpolation: linear beta = start + (end - start) s, or log
    beta = start (end / start)^s (equal time per decade of beta).
    """

    shape: str = "cosine"
    start: float = DEFAULT_LOWPASS_BETA
    end: float = DEFAULT_HIGHPASS_BETA
    interpolation: str = "linear"
    num_stages: int = 4

    def __post_init__(self) -> None:
        if self.shape not in SCHEDULE_SHAPES:
            raise ValueError(f"unknown beta schedule shape '{self.shape}'; choose one of: {', '.join(SCHEDULE_SHAPES)}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"unknown beta interpolation '{self.interpolation}'; choose one of: {', '.join(INTERPOLATIONS)}"
            )
        check_relative_beta(self.start, "beta_start")
        check_relative_beta(self.end, "beta_end")
        if self.shape == "step" and (not isinstance(self.num_stages, int) or self.num_stages < 2):
            raise ValueError(f"a step schedule needs an integer num_stages >= 2, got {self.num_stages!r}")

    def fraction(self, progress: float) -> float:
        """s(t): 0 at the start, 1 at the end."""
        t = min(max(progress, 0.0), 1.0)
        if self.shape == "linear":
            return t
        if self.shape == "cosine":
            return (1.0 - math.cos(math.pi * t)) / 2.0
        stage = min(int(t * self.num_stages), self.num_stages - 1)
        return stage / (self.num_stages - 1)

    def value(self, progress: float) -> float:
        """beta(t), in the units of ``start`` and ``end``."""
        s = self.fraction(progress)
        if self.interpolation == "log":
            return self.start * (self.end / self.start) ** s
        return self.start + (self.end - self.start) * s


def distillation_progress(context: MatchingContext) -> float:
    """iteration / total_iterations, clipped to [0, 1]."""
    if context.total_iterations < 1:
        raise ValueError(
            f"CFM schedules beta over the run and needs total_iterations >= 1, got {context.total_iterations}"
        )
    return min(max(context.iteration / context.total_iterations, 0.0), 1.0)


@OBJECTIVES.register("cfm-dm", aliases=("cfm",))
class CurriculumFrequencyMatching(RidgeFilterMatching):
    """UniDD's ridge-filter matching (Eqs. 11-12) with beta following a :class:`BetaSchedule` (Eq. 13)."""

    name = "cfm-dm"

    def __init__(
        self,
        schedule: str = "cosine",
        beta_start: float = DEFAULT_LOWPASS_BETA,
        beta_end: float = DEFAULT_HIGHPASS_BETA,
        interpolation: str = "linear",
        num_stages: int = 4,
        schedule_over: str = "iterations",
        slot_groups: int | None = None,
        **weights: float,
    ) -> None:
        super().__init__(**weights)
        self.schedule = BetaSchedule(schedule, beta_start, beta_end, interpolation, num_stages)
        if schedule_over not in SCHEDULE_AXES:
            raise ValueError(f"unknown schedule_over '{schedule_over}'; choose one of: {', '.join(SCHEDULE_AXES)}")
        if slot_groups is not None and not (isinstance(slot_groups, int) and slot_groups >= 1):
            raise ValueError(f"slot_groups must be an integer >= 1 (or None: one group per slot), got {slot_groups!r}")
        self.schedule_over, self.slot_groups = schedule_over, slot_groups

    def relative_beta(self, context: MatchingContext) -> float:
        return self.schedule.value(distillation_progress(context))

    def loss(
        self,
        real: Sequence[Tensor],
        synthetic: Sequence[Tensor],
        classes: Sequence[int],
        context: MatchingContext,
    ) -> Tensor:
        if self.schedule_over == "iterations":
            return super().loss(real, synthetic, classes, context)
        self.check_batches(real, synthetic, classes)
        slots = min(features.shape[0] for features in synthetic)
        groups = slots if self.slot_groups is None else min(self.slot_groups, slots)
        by_class = [features.tensor_split(groups) for features in synthetic]  # contiguous slot groups
        betas = [self.schedule.value(group / groups) for group in range(groups)]  # Eq. 13: b / B, b < B
        losses, terms = [], {"signal_term": [], "filter_term": []}
        for group, beta in enumerate(betas):
            losses.append(self.loss_at(real, [chunks[group] for chunks in by_class], classes, context, beta))
            for name, values in terms.items():
                if name in context.log:
                    values.append(context.log[name])
        context.log.update({name: sum(values) / len(values) for name, values in terms.items() if values})
        context.log["ridge_beta_relative"] = betas[0]  # the first group's; the last group's below
        context.log["ridge_beta_relative_last_group"] = betas[-1]
        return torch.stack(losses).mean()
