"""The ε-Laplacian working likelihood behind the data-driven SVR insensitivity parameter.

Equation numbers refer to ``docs/svr.md``; the paper's own sections 3-5 were not available, so the
density and the estimator follow the implementer's reconstruction (``/work/shared/papers/svr.md``).

- eq. (1) working density   p(r | ε, σ) = exp(-|r/σ|_ε) / (2σ(1 + ε)),   |u|_ε = max(0, |u| - ε)
- eq. (2) generalised loss  G(ε, σ) = n log(2σ) + n log(1 + ε) + Σ_i |r_i/σ|_ε  (negative log-likelihood)
- eq. (3) profile in σ      with tube half-width e = εσ and T(e) = Σ_i (|r_i| - e)_+ the minimiser over σ
                            is σ(e) = (T + sqrt(T² + 4nTe)) / (2n)
- eq. (4) candidate set     the profile G(e, σ(e)) is concave between consecutive sorted |r_i|, so its
                            minimum lies in {0} ∪ {|r_i|}
- eq. (8) signal share      τ² = max(floor, 1 - σ² v(ε)), v(ε) = (ε³/3 + ε² + 2ε + 2) / (1 + ε) the variance of
                            eq. (1) at σ = 1, on a response of unit variance
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats


def insensitive_abs(u: ArrayLike, epsilon: float) -> NDArray[np.float64]:
    """Vapnik's ε-insensitive absolute value |u|_ε = max(0, |u| - ε) (eq. 1)."""
    return np.maximum(np.abs(np.asarray(u, dtype=float)) - epsilon, 0.0)


class EpsilonLaplace(stats.rv_continuous):
    """ε-Laplacian distribution, the working density of eq. (1) (use ``scale=σ``).

    Uniform on [-ε, ε] with Laplace(1) tails outside; ε = 0 is the standard Laplace density.
    Use the module instance :data:`epsilon_laplace`, e.g. ``epsilon_laplace.rvs(1.0, scale=0.5, size=n)``.
    """

    def _argcheck(self, epsilon: NDArray[np.float64]) -> NDArray[np.bool_]:
        return np.asarray(epsilon) >= 0.0

    def _logpdf(self, x: NDArray[np.float64], epsilon: NDArray[np.float64]) -> NDArray[np.float64]:
        return -np.maximum(np.abs(x) - epsilon, 0.0) - np.log(2.0 * (1.0 + epsilon))

    def _pdf(self, x: NDArray[np.float64], epsilon: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.exp(self._logpdf(x, epsilon))

    def _cdf(self, x: NDArray[np.float64], epsilon: NDArray[np.float64]) -> NDArray[np.float64]:
        magnitude = np.abs(x)
        tail_mass = np.where(magnitude > epsilon, -np.expm1(-(magnitude - epsilon)), 0.0)
        half_mass = (np.minimum(magnitude, epsilon) + tail_mass) / (2.0 * (1.0 + epsilon))
        return 0.5 + np.sign(x) * half_mass

    def _ppf(self, q: NDArray[np.float64], epsilon: NDArray[np.float64]) -> NDArray[np.float64]:
        # Invert the cdf on the upper half, then use symmetry.
        upper_mass = np.abs(q - 0.5) * 2.0 * (1.0 + epsilon)  # in [0, 1 + ε)
        in_core = upper_mass <= epsilon
        tail_excess = np.where(in_core, 0.0, upper_mass - epsilon)
        magnitude = np.where(in_core, upper_mass, epsilon - np.log1p(-tail_excess))
        return np.sign(q - 0.5) * magnitude

    def _stats(self, epsilon: NDArray[np.float64]) -> tuple:
        # E[x²] = (ε³/3 + ε² + 2ε + 2) / (1 + ε): core ∫x² plus the shifted exponential tails.
        variance = (epsilon**3 / 3.0 + epsilon**2 + 2.0 * epsilon + 2.0) / (1.0 + epsilon)
        return 0.0, variance, 0.0, None


epsilon_laplace = EpsilonLaplace(name="epsilon_laplace", shapes="epsilon")


def signal_share(epsilon: float, sigma: float, floor: float = 0.05) -> float:
    """Signal share τ² of a unit-variance response whose noise follows eq. (1) with (ε, σ) (eq. 8).

    The working density's variance σ² v(ε) is the noise share; the rest, floored at ``floor`` so that a penalty
    proportional to τ² never vanishes, is the share of the regression function.
    """
    if sigma <= 0.0 or epsilon < 0.0 or not 0.0 < floor <= 1.0:
        raise ValueError(f"need sigma > 0, epsilon >= 0 and floor in (0, 1], got {sigma=}, {epsilon=}, {floor=}")
    return float(max(floor, 1.0 - sigma**2 * epsilon_laplace.var(epsilon)))


def working_likelihood_loss(residuals: ArrayLike, epsilon: float, sigma: float) -> float:
    """Generalised loss G(ε, σ) of eq. (2): the negative log working likelihood of the residuals."""
    if sigma <= 0.0 or epsilon < 0.0:
        raise ValueError(f"need sigma > 0 and epsilon >= 0, got sigma={sigma}, epsilon={epsilon}")
    residuals = np.asarray(residuals, dtype=float)
    n = residuals.size
    return float(n * np.log(2.0 * sigma) + n * np.log1p(epsilon) + insensitive_abs(residuals / sigma, epsilon).sum())


class NoiseEstimate(NamedTuple):
    """Joint working-likelihood estimate: standardised insensitivity ε and noise scale σ."""

    epsilon: float
    sigma: float
    loss: float  # G(ε, σ) of eq. (2) at the estimate
    at_bound: bool = False  # the tube is the widest the outside-residual bound admits (the bound, not G, set ε)


def fit_working_likelihood(
    residuals: ArrayLike, min_outside_fraction: float = 0.1, min_outside_count: int = 0
) -> NoiseEstimate:
    """Minimise G(ε, σ) (eq. 2) jointly and exactly, by profiling out σ (eq. 3) over the candidates of eq. (4).

    ``min_outside_fraction`` keeps at least that fraction of residuals outside the tube εσ. Without it the
    likelihood is unbounded-in-ε for light-tailed (e.g. uniform) residuals: σ → 0 and the tube swallows
    every residual. Under eq. (1) the outside fraction is 1/(1 + ε), so 0.1 roughly caps ε near 9.
    ``min_outside_count`` keeps at least that many outside as well (the small-sample bound of docs/svr.md:
    σ is the scale of the outside residuals' excess, eq. 3, and is not estimable from one or two of them).
    """
    magnitudes = np.sort(np.abs(np.asarray(residuals, dtype=float).ravel()))
    n = magnitudes.size
    if n < 2 or not np.all(np.isfinite(magnitudes)):
        raise ValueError(f"need at least 2 finite residuals to estimate (epsilon, sigma), got {n}")
    if not 0.0 < min_outside_fraction <= 1.0:
        raise ValueError(f"min_outside_fraction must lie in (0, 1], got {min_outside_fraction}")
    if min_outside_count < 0:
        raise ValueError(f"min_outside_count must be >= 0, got {min_outside_count}")
    required_outside = max(np.ceil(min_outside_fraction * n), min(min_outside_count, n))

    # Candidate k: tube half-width e_k (0 for k = 0, else the k-th smallest |r|); outside are magnitudes[k:].
    tube = np.concatenate([[0.0], magnitudes[:-1]])
    n_outside = n - np.arange(n)
    outside_sum = np.cumsum(magnitudes[::-1])[::-1]
    excess = np.maximum(outside_sum - n_outside * tube, 0.0)  # T(e) of eq. (3); clip rounding below 0
    valid = (n_outside >= required_outside) & (excess > 0.0)
    if not valid.any():
        raise ValueError(
            "residuals have no spread outside any admissible tube (e.g. all equal); the noise scale cannot be estimated"
        )
    tube, excess = tube[valid], excess[valid]
    sigma = (excess + np.sqrt(excess**2 + 4.0 * n * excess * tube)) / (2.0 * n)  # eq. (3)
    profile_loss = n * np.log(2.0 * (sigma + tube)) + excess / sigma  # eq. (2) with e = εσ
    best = int(np.argmin(profile_loss))
    return NoiseEstimate(
        epsilon=float(tube[best] / sigma[best]),
        sigma=float(sigma[best]),
        loss=float(profile_loss[best]),
        at_bound=best == tube.size - 1,  # admissible candidates are the first ones, tubes widening
    )
