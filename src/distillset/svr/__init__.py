"""Support vector regression with a data-driven insensitivity parameter from a working likelihood.

Seed paper: "A working likelihood approach to support vector regression with a data-driven insensitivity
parameter", Int. J. Mach. Learn. & Cybern., DOI 10.1007/s13042-022-01672-x. See docs/svr.md.
"""

from distillset.svr.estimator import SMALL_SAMPLE_SIZE, SmallSampleWarning, WorkingLikelihoodSVR
from distillset.svr.working_likelihood import (
    EpsilonLaplace,
    NoiseEstimate,
    epsilon_laplace,
    fit_working_likelihood,
    insensitive_abs,
    signal_share,
    working_likelihood_loss,
)

__all__ = [
    "EpsilonLaplace",
    "NoiseEstimate",
    "SMALL_SAMPLE_SIZE",
    "SmallSampleWarning",
    "WorkingLikelihoodSVR",
    "epsilon_laplace",
    "fit_working_likelihood",
    "insensitive_abs",
    "signal_share",
    "working_likelihood_loss",
]
