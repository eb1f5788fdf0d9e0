"""Working-likelihood SVR: scikit-learn's SVR with the insensitivity ε and noise scale σ estimated from data.

Algorithm (docs/svr.md, section "Algorithm"; a reconstruction, the paper's sections 3-5 were not available):

1. standardise y by its mean and standard deviation s_y;
2. pilot: cross-fitted residuals of SVR(ε = 0, C)  (Jeng et al.'s first step, made out-of-fold);
3. (ε, σ) = argmin G(ε, σ) on the residuals (eq. 2, exact profile search of eq. 3-4);
4. score the estimate by its cross-validated working loss J = G(ε, σ; cross-fitted residuals of the SVR of
   eq. (5) with that (ε, σ)) / n (eq. 6), and estimate again from those residuals (step 3); stop at the first
   estimate that lowers J by less than ``tol`` and keep the one before it, or after ``max_iter`` estimates;
5. penalty: C/σ (eq. 5, the default ``noise_scaled_C=True``). With ``noise_scaled_C="auto"``: with the kept
   (ε, σ), cross-fit the SVR once more with C instead of C/σ on the same folds and keep whichever penalty has the
   smaller out-of-fold squared error (eq. 7);
   ``auto_penalties`` adds the signal-share penalty C·τ²/σ (eq. 8) as a candidate, ``auto_own_descent`` runs
   steps 2-4 with each candidate penalty and compares the candidates' own kept estimates;
6. fit the SVR with the kept estimate and penalty on all samples.

eq. (5): minimise ½‖w‖² + C Σ_i |(y_i - f(x_i)) / σ|_ε with y, f in units of s_y, i.e. the loss is the
negative working log-likelihood of the noise-standardised residuals and the prior is LIBSVM's (C on the
standardised response). In scikit-learn's parametrisation that is SVR(C = C/σ, epsilon = εσ) on y/s_y.

Small samples (our rules, not the paper's): below ``SMALL_SAMPLE_SIZE`` samples a :class:`SmallSampleWarning`
is issued, the residuals are cross-fitted leave-one-out (``small_sample_loo``), and ``min_outside_count``
keeps at least that many residuals outside the tube.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import KFold, cross_val_predict
from sklearn.svm import SVR
from sklearn.utils.validation import check_is_fitted, validate_data

from distillset.svr.working_likelihood import (
    NoiseEstimate,
    fit_working_likelihood,
    signal_share,
    working_likelihood_loss,
)

SMALL_SAMPLE_SIZE = 50  # below this many samples the estimate of ε is not trusted (docs/svr.md, "Small samples")
PENALTIES = ("C/sigma", "C", "C*tau2/sigma")  # eq. (5), LIBSVM's plain C, the signal-share penalty of eq. (8)
FIXED_PENALTY = {True: "C/sigma", False: "C", "signal_share": "C*tau2/sigma"}  # noise_scaled_C -> penalty rule


class SmallSampleWarning(UserWarning):
    """The data are too few for the working-likelihood estimate of (ε, σ) to be trusted."""


class _Descent(NamedTuple):
    """One run of steps 2-4 with one penalty rule: every estimate, its J (eq. 6), and the kept one."""

    estimates: list[NoiseEstimate]
    losses: list[float]
    kept: NoiseEstimate
    kept_residuals: NDArray[np.float64]  # cross-fitted residuals of the kept estimate's SVR
    converged: bool


class WorkingLikelihoodSVR(RegressorMixin, BaseEstimator):
    """ε-SVR whose insensitivity is chosen by minimising the working-likelihood loss G(ε, σ) (eq. 2).

    Parameters
    ----------
    C : penalty of eq. (5) on the standardised response (LIBSVM's default scale, C = 1).
    kernel, degree, gamma, coef0 : passed to :class:`sklearn.svm.SVR`.
    noise_scaled_C : True (default): the loss is divided by σ as eq. (5) says, i.e. SVR(C=C/σ); False: the SVR
        keeps C on the standardised response and only the tube εσ is data-driven; "signal_share": SVR(C=C·τ²/σ)
        with τ² the signal share of eq. (8); "auto": the (ε, σ) loop runs with the first of ``auto_penalties``,
        then the candidate penalty with the smallest cross-validated squared error (eq. 7) is kept.
    auto_penalties : candidate penalties of "auto", from ``PENALTIES`` ("C/sigma", "C", "C*tau2/sigma").
    auto_own_descent : with "auto", run the (ε, σ) descent once per candidate penalty (each with its own
        estimates) instead of scoring every candidate with the estimate of the first one's descent.
    cv : number of folds of the cross-fitted residuals (out-of-fold residuals are not shrunk by the tube).
    small_sample_loo : below ``SMALL_SAMPLE_SIZE`` samples cross-fit leave-one-out instead of ``cv`` folds, so
        each residual comes from a fit on n - 1 samples, the closest to the final fit on n (docs/svr.md).
    max_iter : most (ε, σ) estimates; each costs ``cv`` SVR fits to score it.
    tol : stop when an estimate lowers the cross-validated working loss J (eq. 6, nats per sample) by less
        than this; the estimate before it is kept.
    min_outside_fraction : smallest fraction of residuals outside the tube (see ``fit_working_likelihood``).
    min_outside_count : smallest number of residuals outside the tube, the small-sample rule of docs/svr.md
        (binds below ``min_outside_count / min_outside_fraction`` samples); 0 turns it off.
    random_state : seed of the fold shuffling.

    Fitted attributes
    -----------------
    epsilon_ : standardised insensitivity ε (the tube is ``epsilon_ * sigma_`` in y units).
    sigma_ : noise scale σ in y units.
    n_iter_ : number of (ε, σ) estimates made (each scored by J).
    converged_ : True if the loop stopped because J stopped improving, False if it ran into ``max_iter``.
    estimates_ : every estimate made, in units of the standardised response (``at_bound``: the outside-residual
        bound, not the likelihood, set the tube).
    loss_curve_ : J (eq. 6) of each estimate, nats per sample.
    penalty_ : the final SVR's penalty rule, one of ``PENALTIES``.
    noise_scaled_C_ : whether the final SVR's penalty involves σ (``penalty_`` is not "C").
    penalty_cv_mse_ : with ``noise_scaled_C="auto"``, the out-of-fold mean squared error (standardised response)
        of each candidate penalty's SVR with its kept estimate, keyed by rule (eq. 7); else None.
    svr_ : the final :class:`sklearn.svm.SVR`, fitted on the standardised response.
    y_mean_, y_scale_ : mean and standard deviation s_y used to standardise y.
    """

    def __init__(
        self,
        C: float = 1.0,
        kernel: str = "rbf",
        degree: int = 3,
        gamma: str | float = "scale",
        coef0: float = 0.0,
        noise_scaled_C: bool | str = True,
        auto_penalties: tuple[str, ...] = ("C/sigma", "C"),
        auto_own_descent: bool = False,
        cv: int = 5,
        small_sample_loo: bool = True,
        max_iter: int = 20,
        tol: float = 1e-3,
        min_outside_fraction: float = 0.1,
        min_outside_count: int = 5,
        random_state: int | None = None,
    ) -> None:
        self.C = C
        self.kernel = kernel
        self.degree = degree
        self.gamma = gamma
        self.coef0 = coef0
        self.noise_scaled_C = noise_scaled_C
        self.auto_penalties = auto_penalties
        self.auto_own_descent = auto_own_descent
        self.cv = cv
        self.small_sample_loo = small_sample_loo
        self.max_iter = max_iter
        self.tol = tol
        self.min_outside_fraction = min_outside_fraction
        self.min_outside_count = min_outside_count
        self.random_state = random_state

    def _check_params(self) -> None:
        if not (isinstance(self.C, numbers.Real) and self.C > 0):
            raise ValueError(f"C must be a positive number, got {self.C!r}")
        if not (isinstance(self.noise_scaled_C, bool) or self.noise_scaled_C in ("auto", "signal_share")):
            raise ValueError(
                f"noise_scaled_C must be True, False, 'signal_share' or 'auto', got {self.noise_scaled_C!r}"
            )
        penalties = tuple(self.auto_penalties) if isinstance(self.auto_penalties, (tuple, list)) else ()
        if len(penalties) < 2 or len(set(penalties)) < len(penalties) or not set(penalties) <= set(PENALTIES):
            raise ValueError(
                f"auto_penalties must be at least two distinct rules from {PENALTIES}, got {self.auto_penalties!r}"
            )
        if not isinstance(self.auto_own_descent, bool):
            raise ValueError(f"auto_own_descent must be True or False, got {self.auto_own_descent!r}")
        if not (isinstance(self.cv, numbers.Integral) and self.cv >= 2):
            raise ValueError(f"cv must be an integer >= 2 (number of folds), got {self.cv!r}")
        if not (isinstance(self.max_iter, numbers.Integral) and self.max_iter >= 1):
            raise ValueError(f"max_iter must be an integer >= 1, got {self.max_iter!r}")
        if not (isinstance(self.tol, numbers.Real) and self.tol >= 0):
            raise ValueError(f"tol must be a non-negative number, got {self.tol!r}")
        if not (isinstance(self.min_outside_count, numbers.Integral) and self.min_outside_count >= 0):
            raise ValueError(
                f"min_outside_count must be an integer >= 0 (0 turns the small-sample rule off), "
                f"got {self.min_outside_count!r}"
            )

    def _svr(self, estimate: NoiseEstimate | None, penalty: str = "C/sigma") -> SVR:
        """The SVR of eq. (5) (C/σ), with the plain penalty C or with C·τ²/σ (eq. 8), on the standardised response;
        ``None`` gives the ε = 0 pilot."""
        if estimate is None:
            return SVR(C=self.C, epsilon=0.0, **self._kernel_params())
        scale = {
            "C/sigma": 1.0 / estimate.sigma,
            "C": 1.0,
            "C*tau2/sigma": signal_share(estimate.epsilon, estimate.sigma) / estimate.sigma,
        }[penalty]
        return SVR(C=self.C * scale, epsilon=estimate.epsilon * estimate.sigma, **self._kernel_params())

    def _kernel_params(self) -> dict:
        return {"kernel": self.kernel, "degree": self.degree, "gamma": self.gamma, "coef0": self.coef0}

    def fit(self, X: ArrayLike, y: ArrayLike) -> WorkingLikelihoodSVR:
        """Estimate (ε, σ) by descent on the cross-validated working loss (eq. 6), then fit on all of (X, y)."""
        self._check_params()
        X, y = validate_data(self, X, y, y_numeric=True, dtype=np.float64)
        n_samples = X.shape[0]
        if n_samples < self.cv:
            raise ValueError(
                f"WorkingLikelihoodSVR needs at least cv={self.cv} samples for its cross-fitted residuals, "
                f"got n_samples={n_samples}; lower cv or add samples"
            )
        self.y_mean_ = float(y.mean())
        self.y_scale_ = float(y.std())
        if not self.y_scale_ > 1e-12 * max(1.0, abs(self.y_mean_)):
            raise ValueError(
                f"y is constant (all {n_samples} values equal {self.y_mean_:g}); the noise scale cannot be "
                "estimated. A regressor is not needed: predict that constant"
            )
        small_sample = n_samples < SMALL_SAMPLE_SIZE
        if small_sample:
            rules = [
                f"at least {self.min_outside_count} residuals are kept outside the tube"
                if self.min_outside_count > 0
                else "no minimum count outside the tube (min_outside_count=0)",
                "leave-one-out residuals" if self.small_sample_loo else f"{self.cv}-fold residuals",
            ]
            warnings.warn(
                f"n_samples={n_samples} < {SMALL_SAMPLE_SIZE}: the working-likelihood estimate of epsilon rests on "
                f"few cross-fitted residuals and is not reliable ({'; '.join(rules)}); compare with a "
                "cross-validated epsilon or add samples",
                SmallSampleWarning,
                stacklevel=2,
            )
        y_standardised = (y - self.y_mean_) / self.y_scale_
        if small_sample and self.small_sample_loo:
            folds = KFold(n_splits=n_samples)  # leave-one-out
        else:
            folds = KFold(n_splits=self.cv, shuffle=True, random_state=self.random_state)

        def residuals(estimate: NoiseEstimate | None, penalty: str) -> NDArray[np.float64]:
            svr = self._svr(estimate, penalty)
            return y_standardised - cross_val_predict(svr, X, y_standardised, cv=folds)

        if self.noise_scaled_C != "auto":
            candidates = [FIXED_PENALTY[self.noise_scaled_C]]
        else:
            candidates = list(self.auto_penalties)
        # one descent per candidate with auto_own_descent, else the first candidate's descent serves all
        descents = {rule: self._descend(residuals, rule) for rule in candidates[: None if self.auto_own_descent else 1]}
        first = descents[candidates[0]]
        cv_mse = {candidates[0]: float(np.mean(first.kept_residuals**2))}
        for rule in candidates[1:]:  # eq. (7): same folds, the candidate penalties
            own = descents.get(rule)
            cv_mse[rule] = float(np.mean((own.kept_residuals if own else residuals(first.kept, rule)) ** 2))
        self.penalty_ = min(candidates, key=lambda rule: cv_mse[rule])  # ties keep the earlier candidate
        self.penalty_cv_mse_ = cv_mse if self.noise_scaled_C == "auto" else None
        self.noise_scaled_C_ = self.penalty_ != "C"
        descent = descents.get(self.penalty_, first)
        kept = descent.kept
        self.n_iter_ = len(descent.estimates)
        self.estimates_ = descent.estimates
        self.loss_curve_ = descent.losses
        self.converged_ = descent.converged
        self.epsilon_ = kept.epsilon
        self.sigma_ = kept.sigma * self.y_scale_
        self.svr_ = self._svr(kept, self.penalty_).fit(X, y_standardised)
        return self

    def _descend(self, residuals: Callable[[NoiseEstimate | None, str], NDArray[np.float64]], penalty: str) -> _Descent:
        """Steps 2-4: pilot residuals, then estimates of (ε, σ) scored by J (eq. 6) until J stops improving."""

        def estimate_from(r: NDArray[np.float64]) -> NoiseEstimate:
            return fit_working_likelihood(r, self.min_outside_fraction, self.min_outside_count)

        estimates = [estimate_from(residuals(None, penalty))]
        scored: list[NDArray[np.float64]] = []  # cross-fitted residuals of each estimate's SVR
        losses: list[float] = []
        while True:
            current = estimates[-1]
            scored.append(residuals(current, penalty))
            losses.append(working_likelihood_loss(scored[-1], current.epsilon, current.sigma) / len(scored[-1]))
            if len(losses) >= 2 and losses[-1] > losses[-2] - self.tol:
                kept_at, converged = len(estimates) - 2, True
                break
            if len(estimates) == self.max_iter:
                kept_at, converged = len(estimates) - 1, False
                warnings.warn(
                    f"stopped at max_iter={self.max_iter} (epsilon, sigma) estimates before the cross-validated "
                    "working loss stopped improving; increase max_iter or tol",
                    ConvergenceWarning,
                    stacklevel=3,
                )
                break
            estimates.append(estimate_from(scored[-1]))
        return _Descent(estimates, losses, estimates[kept_at], scored[kept_at], converged)

    def predict(self, X: ArrayLike) -> NDArray[np.float64]:
        """Predictions of the final SVR, mapped back to the units of y."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        return self.svr_.predict(X) * self.y_scale_ + self.y_mean_
