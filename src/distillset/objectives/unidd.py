"""UniDD: dataset-distillation objectives as spectral filters (Bo, Liu & Wang, ICLR 2026, arXiv:2503.01212).

For features X (n x d) and labels Y (n x C, one-hot or soft) UniDD works with

    FFC = X^T X / n   (feature-feature correlation, d x d)                       (docs/unidd_cfm.md, Eq. 1)
    FLC = X^T Y / n   (feature-label correlation, d x C)                         (Eq. 2)

and a filter f applied to the eigenvalues of the FFC, f(FFC) = U diag(f(lambda)) U^T (Eq. 3). A DD
objective matches a filter term and/or a filtered signal between real (r) and synthetic (s) data:

    filter term  || f(FFC_r) - f(FFC_s) ||_F^2                                    (Eq. 4)
    signal term  || f(FFC_r) FLC_r - g(FFC_s) FLC_s ||_F^2                         (Eq. 5)

Large FFC eigenvalues are "low frequencies", small ones "high frequencies". The classic families:

* DM / linear-kernel MMD: f = 1 on FLC (Eq. 6); kernel MMD is the same on random-Fourier-lifted
  features (Eq. 7).
* Gradient matching of a linear head W: grad = FFC W - FLC, i.e. f = lambda on W plus f = 1 on FLC (Eq. 8).
* KRR (KIP / FrePo): the ridge solution is f(FFC) FLC with f = 1 / (lambda + beta) (Eq. 9).
* MTT: p gradient steps from W = 0 give f(FFC) FLC with f = (1 - (1 - alpha lambda)^p) / lambda (Eq. 10).

The fixed-filter objectives "lowpass" and "highpass" match the ridge filter of Eq. 9 at a fixed large
or small beta with the CFM loss (Eq. 11); CFM itself (cfm.py) moves beta between the two.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from distillset.objectives import OBJECTIVES
from distillset.objectives.base import MatchingContext, MatchingObjective

EigenvalueResponse = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class CorrelationStatistics:
    """FFC (d x d) and FLC (d x C) of one set of features (Eqs. 1-2)."""

    ffc: Tensor
    flc: Tensor


def _check_features(features: Tensor) -> None:
    if features.ndim != 2 or features.shape[0] == 0:
        raise ValueError(f"features must be a non-empty (n, d) matrix, got shape {tuple(features.shape)}")


def feature_feature_correlation(features: Tensor) -> Tensor:
    """FFC = X^T X / n (Eq. 1), uncentred, in the dtype of ``features``."""
    _check_features(features)
    return features.T @ features / features.shape[0]


def feature_label_correlation(features: Tensor, labels: Tensor) -> Tensor:
    """FLC = X^T Y / n (Eq. 2); ``labels`` is (n, C) one-hot or soft."""
    _check_features(features)
    if labels.ndim != 2 or labels.shape[0] != features.shape[0]:
        raise ValueError(
            f"labels must be (n, C) with n={features.shape[0]} rows like the features, got shape "
            f"{tuple(labels.shape)}; one-hot encode class indices with torch.nn.functional.one_hot"
        )
    return features.T @ labels.to(features.dtype) / features.shape[0]


def correlation_statistics(features: Tensor, labels: Tensor) -> CorrelationStatistics:
    """Both statistics of Eqs. 1-2."""
    return CorrelationStatistics(feature_feature_correlation(features), feature_label_correlation(features, labels))


def apply_spectral_filter(matrix: Tensor, response: EigenvalueResponse, rhs: Tensor | None = None) -> Tensor:
    """f(M) rhs = U diag(f(lambda)) U^T rhs for a symmetric M (Eq. 3); f(M) itself when ``rhs`` is None.

    This is the definition, via ``torch.linalg.eigh``; its backward is undefined for repeated
    eigenvalues (e.g. a rank-deficient synthetic FFC), so losses use :meth:`SpectralFilter.apply`.
    """
    eigenvalues, eigenvectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    filtered = eigenvectors * response(eigenvalues)
    if rhs is None:
        return filtered @ eigenvectors.T
    return filtered @ (eigenvectors.T @ rhs)


class SpectralFilter(ABC):
    """A filter f on FFC eigenvalues: :meth:`response` is f(lambda), :meth:`apply` a closed form of f(FFC) rhs."""

    @abstractmethod
    def response(self, eigenvalues: Tensor) -> Tensor:
        """f(lambda), elementwise."""

    @abstractmethod
    def apply(self, ffc: Tensor, rhs: Tensor) -> Tensor:
        """f(FFC) @ rhs without an eigendecomposition (differentiable in ``ffc``)."""

    def matrix(self, ffc: Tensor) -> Tensor:
        """f(FFC), d x d."""
        return self.apply(ffc, torch.eye(ffc.shape[0], dtype=ffc.dtype, device=ffc.device))


class IdentityFilter(SpectralFilter):
    """f(lambda) = 1: DM's mean matching and kernel MMD (Eqs. 6-7)."""

    def response(self, eigenvalues: Tensor) -> Tensor:
        return torch.ones_like(eigenvalues)

    def apply(self, ffc: Tensor, rhs: Tensor) -> Tensor:
        return rhs


class LinearFilter(SpectralFilter):
    """f(lambda) = lambda: the FFC term of a linear head's gradient (Eq. 8)."""

    def response(self, eigenvalues: Tensor) -> Tensor:
        return eigenvalues

    def apply(self, ffc: Tensor, rhs: Tensor) -> Tensor:
        return ffc @ rhs


@dataclass(frozen=True)
class RidgeFilter(SpectralFilter):
    """f(lambda) = 1 / (lambda + beta): kernel ridge regression, KIP/FrePo and CFM (Eqs. 9, 11).

    Large beta: nearly flat (1/beta, DM-like low-pass); small beta: amplifies the small
    eigenvalues (high-pass).
    """

    beta: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.beta) and self.beta > 0):
            raise ValueError(f"RidgeFilter needs a finite beta > 0, got {self.beta}")

    def response(self, eigenvalues: Tensor) -> Tensor:
        return 1.0 / (eigenvalues + self.beta)

    def cholesky(self, ffc: Tensor) -> Tensor:
        """The lower Cholesky factor of FFC + beta I, which :meth:`apply` and :meth:`matrix` accept precomputed."""
        return torch.linalg.cholesky(ffc + self.beta * torch.eye(ffc.shape[0], dtype=ffc.dtype, device=ffc.device))

    def apply(self, ffc: Tensor, rhs: Tensor, *, cholesky: Tensor | None = None) -> Tensor:
        return torch.cholesky_solve(rhs, self.cholesky(ffc) if cholesky is None else cholesky)

    def matrix(self, ffc: Tensor, *, cholesky: Tensor | None = None) -> Tensor:
        return torch.cholesky_inverse(self.cholesky(ffc) if cholesky is None else cholesky)


@dataclass(frozen=True)
class GradientDescentFilter(SpectralFilter):
    """f(lambda) = alpha * sum_{k<p} (1 - alpha lambda)^k = (1 - (1 - alpha lambda)^p) / lambda (Eq. 10).

    ``steps`` (p) steps of gradient descent with learning rate ``learning_rate`` (alpha) on the
    linear head loss ||X W - Y||^2 / (2n) from W = 0 reach W_p = f(FFC) FLC (MTT's trajectories).
    """

    learning_rate: float
    steps: int

    def __post_init__(self) -> None:
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"GradientDescentFilter needs a finite learning_rate > 0, got {self.learning_rate}")
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"GradientDescentFilter needs an integer steps >= 1, got {self.steps!r}")

    def response(self, eigenvalues: Tensor) -> Tensor:
        powers = torch.arange(self.steps, dtype=eigenvalues.dtype, device=eigenvalues.device)
        return self.learning_rate * (1 - self.learning_rate * eigenvalues).unsqueeze(-1).pow(powers).sum(-1)

    def apply(self, ffc: Tensor, rhs: Tensor) -> Tensor:
        weight = torch.zeros_like(rhs)
        for _ in range(self.steps):
            weight = weight + self.learning_rate * (rhs - ffc @ weight)
        return weight


def filter_distance(
    real: CorrelationStatistics, synthetic: CorrelationStatistics, spectral_filter: SpectralFilter
) -> Tensor:
    """|| f(FFC_r) - f(FFC_s) ||_F^2 (Eq. 4)."""
    return (spectral_filter.matrix(real.ffc) - spectral_filter.matrix(synthetic.ffc)).pow(2).sum()


def signal_distance(
    real: CorrelationStatistics,
    synthetic: CorrelationStatistics,
    real_filter: SpectralFilter,
    synthetic_filter: SpectralFilter | None = None,
) -> Tensor:
    """|| f(FFC_r) FLC_r - g(FFC_s) FLC_s ||_F^2 (Eq. 5); g = f unless ``synthetic_filter`` is given."""
    synthetic_filter = real_filter if synthetic_filter is None else synthetic_filter
    return (real_filter.apply(real.ffc, real.flc) - synthetic_filter.apply(synthetic.ffc, synthetic.flc)).pow(2).sum()


def linear_head_gradient(statistics: CorrelationStatistics, weight: Tensor) -> Tensor:
    """Gradient of ||X W - Y||^2 / (2n) in W: FFC W - FLC = lambda-filtered W minus 1-filtered FLC (Eq. 8)."""
    return LinearFilter().apply(statistics.ffc, weight) - IdentityFilter().apply(statistics.ffc, statistics.flc)


def random_fourier_features(features: Tensor, frequencies: Tensor) -> Tensor:
    """z(x) = [cos(T x), sin(T x)] / sqrt(M) for frequencies T (M x d); z(x)^T z(y) = mean_j cos(t_j^T (x - y)).

    With T drawn from a kernel's spectral measure this is the random-feature map whose identity-
    filtered FLC distance is that kernel's MMD estimate (Eq. 7).
    """
    _check_features(features)
    if frequencies.ndim != 2 or frequencies.shape[1] != features.shape[1]:
        raise ValueError(
            f"frequencies must be (M, d) with d={features.shape[1]} like the features, got shape "
            f"{tuple(frequencies.shape)}"
        )
    projections = features @ frequencies.T
    return torch.cat([projections.cos(), projections.sin()], dim=1) / math.sqrt(frequencies.shape[0])


def ridge_weights(features: Tensor, labels: Tensor, beta: float) -> Tensor:
    """KRR weights W = (FFC + beta I)^{-1} FLC (Eq. 9); kernel form X^T (X X^T + n beta I)^{-1} Y when n < d.

    The kernel (dual) form is what KIP/FrePo compute with a linear kernel (Eq. 9'); the two agree by
    the push-through identity, and the smaller system is solved.
    """
    n, d = features.shape
    if n >= d:
        statistics = correlation_statistics(features, labels)
        return RidgeFilter(beta).apply(statistics.ffc, statistics.flc)
    labels = labels.to(features.dtype)
    return features.T @ RidgeFilter(n * beta).apply(features @ features.T, labels)


def ridge_projection(ffc: Tensor, beta: float, *, cholesky: Tensor | None = None) -> Tensor:
    """P = FFC (FFC + beta I)^{-1} = I - beta (FFC + beta I)^{-1}: the filter f = lambda / (lambda + beta).

    || P_r - P_s ||_F = beta || (FFC_r + beta I)^{-1} - (FFC_s + beta I)^{-1} ||_F, so it is the ridge
    filter term of Eq. 4 in units that stay bounded (0 <= f < 1) as beta varies (Eq. 12). ``cholesky``:
    a precomputed ``RidgeFilter(beta).cholesky(ffc)``.
    """
    identity = torch.eye(ffc.shape[0], dtype=ffc.dtype, device=ffc.device)
    return identity - beta * RidgeFilter(beta).matrix(ffc, cholesky=cholesky)


def ridge_projection_distance(real_projection: Tensor, features: Tensor, beta: float) -> Tensor:
    """|| P_r - P_s ||_F^2 with P_s the :func:`ridge_projection` of ``features`` (Eq. 12).

    For n < d, P_s = X^T M X with M = (X X^T + n beta I)^{-1}, and the distance is expanded as
    ||P_r||^2 - 2 <M, X P_r X^T> + ||M G||^2 (G = X X^T), which never forms a d x d inverse.
    """
    n, d = features.shape
    if n >= d:
        return (real_projection - ridge_projection(feature_feature_correlation(features), beta)).pow(2).sum()
    gram = features @ features.T
    inverse = RidgeFilter(n * beta).matrix(gram)
    projected_gram = inverse @ gram
    cross = (inverse * (features @ real_projection @ features.T)).sum()
    return real_projection.pow(2).sum() - 2 * cross + (projected_gram * projected_gram.T).sum()


def relative_squared_error(target: Tensor, estimate: Tensor) -> Tensor:
    """|| target - estimate ||_F^2 / || target ||_F^2 (the scale-free form of Eqs. 11-12)."""
    return (target - estimate).pow(2).sum() / target.pow(2).sum().clamp_min(torch.finfo(target.dtype).tiny)


# Ridge beta in units of tr(FFC_r) = E||x_r||^2 (the real features' mean squared norm). Since every FFC
# eigenvalue is <= tr(FFC_r), beta >= tr keeps every direction at >= half of the flat gain (low-pass,
# DM-like); beta far below the spectrum's bulk amplifies the small eigenvalues (high-pass).
DEFAULT_LOWPASS_BETA = 1.0
DEFAULT_HIGHPASS_BETA = 1e-3
DEFAULT_SCALE = 1000.0  # keeps image gradients within DM's range on ConvNet-3 features (docs/unidd_cfm.md Sec. 4)


class RidgeFilterMatching(MatchingObjective):
    """CFM's loss with the ridge filter at the beta of each step (Eqs. 11-12), pooled over the step's classes.

    Per step: X_r, X_s are all real / synthetic features of the step's classes, Y one-hot over those
    classes, beta = relative_beta * tr(FFC_r), W = (FFC + beta I)^{-1} FLC, P = FFC (FFC + beta I)^{-1}:

        L = scale * beta_rel^p * ( signal_weight * ||W_r - W_s||^2 / ||W_r||^2
                                   + filter_weight * ||P_r - P_s||^2 / ||P_r||^2 )

    ``beta_scale_power`` p (default 0: Eq. 11 as it is) rescales the loss with beta_rel = beta / tr(FFC_r).
    The image gradient of the bracket grows about as beta_rel^-0.5 from beta_rel 1 to 1e-3 at IPC 10-50
    (docs/unidd_cfm.md Sec. 4), so p = 0.5 keeps CFM's steps at one size along its schedule (an ablation).
    With one class per call (IDM's per-class steps) Y is a column of ones and FLC the class mean.
    Statistics are computed in float64; the loss is returned in the synthetic features' dtype.
    """

    def __init__(
        self,
        *,
        signal_weight: float = 1.0,
        filter_weight: float = 1.0,
        scale: float = DEFAULT_SCALE,
        beta_scale_power: float = 0.0,
    ) -> None:
        for label, value in (("signal_weight", signal_weight), ("filter_weight", filter_weight), ("scale", scale)):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{type(self).__name__}: {label} must be a finite number >= 0, got {value}")
        if signal_weight == 0 and filter_weight == 0:
            raise ValueError(f"{type(self).__name__}: signal_weight and filter_weight are both 0; set one > 0")
        if not math.isfinite(beta_scale_power):
            raise ValueError(f"{type(self).__name__}: beta_scale_power must be a finite number, got {beta_scale_power}")
        self.signal_weight, self.filter_weight, self.scale = float(signal_weight), float(filter_weight), float(scale)
        self.beta_scale_power = float(beta_scale_power)

    @abstractmethod
    def relative_beta(self, context: MatchingContext) -> float:
        """beta / tr(FFC_r) at this step."""

    def loss(
        self,
        real: Sequence[Tensor],
        synthetic: Sequence[Tensor],
        classes: Sequence[int],
        context: MatchingContext,
    ) -> Tensor:
        return self.loss_at(real, synthetic, classes, context, self.relative_beta(context))

    def loss_at(
        self,
        real: Sequence[Tensor],
        synthetic: Sequence[Tensor],
        classes: Sequence[int],
        context: MatchingContext,
        relative_beta: float,
    ) -> Tensor:
        """The loss with the ridge filter at ``relative_beta`` (beta / tr(FFC_r))."""
        self.check_batches(real, synthetic, classes)
        # The real side depends on the real features and beta only: computed once per lockstep group
        # (cfm, lowpass and highpass runs together share the d x d FFC and, at equal beta, its filters).
        real_statistics = context.derive_from_real(
            "unidd.statistics", lambda: correlation_statistics(*_stack_with_one_hot(real, "real"))
        )
        synthetic_features, synthetic_labels = _stack_with_one_hot(synthetic, "synthetic")
        if real_statistics.ffc.shape[0] != synthetic_features.shape[1]:
            raise ValueError(
                f"real and synthetic features differ in dimension: {real_statistics.ffc.shape[0]} vs "
                f"{synthetic_features.shape[1]}; embed both with the same network"
            )
        ffc = real_statistics.ffc
        beta = relative_beta * float(ffc.trace())
        ridge = RidgeFilter(beta)

        def real_cholesky() -> Tensor:  # one factorisation of FFC_r + beta I serves both real-side terms
            return context.derive_from_real(("unidd.ridge_cholesky", beta), lambda: ridge.cholesky(ffc))

        total = synthetic_features.new_zeros(())
        if self.signal_weight > 0:
            real_weights = context.derive_from_real(
                ("unidd.ridge_weights", beta),
                lambda: ridge.apply(ffc, real_statistics.flc, cholesky=real_cholesky()),
            )
            signal = relative_squared_error(real_weights, ridge_weights(synthetic_features, synthetic_labels, beta))
            total = total + self.signal_weight * signal
            context.log["signal_term"] = float(signal.detach())
        if self.filter_weight > 0:
            real_projection = context.derive_from_real(
                ("unidd.ridge_projection", beta), lambda: ridge_projection(ffc, beta, cholesky=real_cholesky())
            )
            projection_error = ridge_projection_distance(real_projection, synthetic_features, beta)
            filter_term = projection_error / real_projection.pow(2).sum()
            total = total + self.filter_weight * filter_term
            context.log["filter_term"] = float(filter_term.detach())
        context.log["ridge_beta_relative"] = relative_beta
        context.log["ridge_beta"] = beta
        return (self.scale * relative_beta**self.beta_scale_power * total).to(synthetic[0].dtype)

def _stack_with_one_hot(features_by_class: Sequence[Tensor], side: str) -> tuple[Tensor, Tensor]:
    """Concatenate per-class features (float64) and one-hot labels over the list positions."""
    for position, features in enumerate(features_by_class):
        if features.ndim != 2 or features.shape[0] == 0:
            raise ValueError(
                f"{side} features of class position {position} must be a non-empty (n, d) matrix, "
                f"got shape {tuple(features.shape)}"
            )
    stacked = torch.cat([features.to(torch.float64) for features in features_by_class])
    sizes = torch.tensor([features.shape[0] for features in features_by_class], device=stacked.device)
    one_hot = torch.eye(len(features_by_class), dtype=torch.float64, device=stacked.device)
    return stacked, one_hot.repeat_interleave(sizes, dim=0)


def check_relative_beta(value: float, label: str) -> float:
    """A relative ridge beta must be a finite number > 0."""
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{label} (ridge beta in units of tr(FFC_real)) must be a finite number > 0, got {value}")
    return float(value)


class FixedFilterMatching(RidgeFilterMatching):
    """Eq. 11 with a constant relative beta: the fixed low-pass / high-pass ablations of CFM."""

    def __init__(self, beta: float, **weights: float) -> None:
        super().__init__(**weights)
        self.beta = check_relative_beta(beta, "beta")

    def relative_beta(self, context: MatchingContext) -> float:
        return self.beta


@OBJECTIVES.register("lowpass")
class LowPassMatching(FixedFilterMatching):
    """Fixed large beta: a nearly flat filter, DM-like low-frequency matching (CFM's start)."""

    name = "lowpass"

    def __init__(self, beta: float = DEFAULT_LOWPASS_BETA, **weights: float) -> None:
        super().__init__(beta, **weights)


@OBJECTIVES.register("highpass")
class HighPassMatching(FixedFilterMatching):
    """Fixed small beta: small FFC eigenvalues amplified, high-frequency matching (CFM's end)."""

    name = "highpass"

    def __init__(self, beta: float = DEFAULT_HIGHPASS_BETA, **weights: float) -> None:
        super().__init__(beta, **weights)
