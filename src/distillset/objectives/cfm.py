"""Curriculum Frequency Matching (Bo, Liu & Wang, ICLR 2026, arXiv:2503.01212; docs/unidd_cfm.md Eq. 13).

CFM matches the ridge-filtered statistics of UniDD (unidd.py, Eqs. 11-12) with a beta that moves
during distillation: large beta first (nearly flat filter, low frequencies), small beta last
(high-pass), so one synthetic set is matched on both bands. The official code decays beta with

    beta_b = beta * (1 + cos(pi b / B)) / 2                                            (Eq. 13)

over its per-IPC batches b; here the progress is the engine's iteration / total_iterations and the
schedule is configurable (linear, cosine, step; linear or log interpolation; start and end values).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

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


@OBJECTIVES.register("cfm")
class CurriculumFrequencyMatching(RidgeFilterMatching):
    """UniDD's ridge-filter matching (Eqs. 11-12) with beta following a :class:`BetaSchedule` (Eq. 13)."""

    name = "cfm"

    def __init__(
        self,
        schedule: str = "cosine",
        beta_start: float = DEFAULT_LOWPASS_BETA,
        beta_end: float = DEFAULT_HIGHPASS_BETA,
        interpolation: str = "linear",
        num_stages: int = 4,
        **weights: float,
    ) -> None:
        super().__init__(**weights)
        self.schedule = BetaSchedule(schedule, beta_start, beta_end, interpolation, num_stages)

    def relative_beta(self, context: MatchingContext) -> float:
        return self.schedule.value(distillation_progress(context))

    def config(self) -> dict[str, Any]:
        schedule = self.schedule
        return {
            "schedule": schedule.shape,
            "beta_start": schedule.start,
            "beta_end": schedule.end,
            "interpolation": schedule.interpolation,
            "num_stages": schedule.num_stages,
            **super().config(),
        }
