"""Tests for distillset.svr: the ε-Laplacian working likelihood (docs/svr.md eq. 1-4) and WorkingLikelihoodSVR."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import integrate, stats
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import KFold, LeaveOneOut, cross_val_predict
from sklearn.utils.estimator_checks import parametrize_with_checks

from distillset.svr import (
    SMALL_SAMPLE_SIZE,
    SmallSampleWarning,
    WorkingLikelihoodSVR,
    epsilon_laplace,
    fit_working_likelihood,
    insensitive_abs,
    signal_share,
    working_likelihood_loss,
)

# ---------------------------------------------------------------------------------------------------------
# Working density, eq. (1)


def test_insensitive_abs_hand_values() -> None:
    np.testing.assert_allclose(insensitive_abs([-3.0, -0.5, 0.0, 0.7, 2.5], 1.0), [2.0, 0.0, 0.0, 0.0, 1.5])


def test_density_hand_values() -> None:
    # p(0 | ε=1, σ=2) = 1 / (2·2·(1+1));  p(3 | ε=1, σ=1) = exp(-(3-1)) / (2·(1+1))
    assert epsilon_laplace.pdf(0.0, 1.0, scale=2.0) == pytest.approx(1.0 / 8.0)
    assert epsilon_laplace.pdf(3.0, 1.0) == pytest.approx(np.exp(-2.0) / 4.0)
    # ε = 0 is the standard Laplace density
    grid = np.linspace(-4, 4, 17)
    np.testing.assert_allclose(epsilon_laplace.pdf(grid, 0.0), stats.laplace.pdf(grid))


@pytest.mark.parametrize("epsilon", [0.0, 0.3, 1.0, 4.0])
def test_density_integrates_to_one_and_variance_matches_closed_form(epsilon: float) -> None:
    pdf = lambda x: epsilon_laplace.pdf(x, epsilon)  # noqa: E731
    mass = integrate.quad(pdf, -np.inf, -epsilon)[0] + integrate.quad(pdf, -epsilon, epsilon)[0]
    mass += integrate.quad(pdf, epsilon, np.inf)[0]
    assert mass == pytest.approx(1.0, abs=1e-8)
    second_moment = 2 * integrate.quad(lambda x: x * x * pdf(x), 0, epsilon)[0]
    second_moment += 2 * integrate.quad(lambda x: x * x * pdf(x), epsilon, np.inf)[0]
    assert epsilon_laplace.var(epsilon) == pytest.approx(second_moment, rel=1e-8)


def test_cdf_ppf_inverse_and_sampler_follows_the_density() -> None:
    epsilon = 1.5
    quantiles = np.linspace(0.001, 0.999, 101)
    np.testing.assert_allclose(epsilon_laplace.cdf(epsilon_laplace.ppf(quantiles, epsilon), epsilon), quantiles)
    # cdf at the core edge: 1/2 + ε / (2(1+ε))
    assert epsilon_laplace.cdf(epsilon, epsilon) == pytest.approx(0.5 + epsilon / (2 * (1 + epsilon)))
    draws = epsilon_laplace.rvs(epsilon, scale=0.4, size=4000, random_state=np.random.default_rng(1))
    assert stats.kstest(draws, lambda x: epsilon_laplace.cdf(x, epsilon, scale=0.4)).pvalue > 0.01
    # fraction inside the tube is ε / (1 + ε) under eq. (1)
    assert np.mean(np.abs(draws) <= 0.4 * epsilon) == pytest.approx(epsilon / (1 + epsilon), abs=0.03)


# ---------------------------------------------------------------------------------------------------------
# Generalised loss, eq. (2), and its exact minimiser, eq. (3)-(4)


def test_loss_hand_value_and_equals_negative_log_density() -> None:
    # residuals (0.5, -2), ε = 1, σ = 1: 2 log 2 + 2 log 2 + (0 + 1)
    assert working_likelihood_loss([0.5, -2.0], 1.0, 1.0) == pytest.approx(4 * np.log(2) + 1)
    residuals = np.random.default_rng(2).normal(size=50)
    expected = -epsilon_laplace.logpdf(residuals, 0.7, scale=1.3).sum()
    assert working_likelihood_loss(residuals, 0.7, 1.3) == pytest.approx(expected)
    with pytest.raises(ValueError, match="sigma > 0"):
        working_likelihood_loss(residuals, 0.7, 0.0)


def test_epsilon_zero_gives_laplace_scale_mle() -> None:
    residuals = np.array([0.2, -1.0, 3.0, -0.4, 0.9])
    # min_outside_fraction = 1 forces every residual outside the tube, i.e. ε = 0: σ = mean |r|
    estimate = fit_working_likelihood(residuals, min_outside_fraction=1.0)
    assert estimate.epsilon == 0.0
    assert estimate.sigma == pytest.approx(np.mean(np.abs(residuals)))


def test_exact_search_matches_dense_grid_search() -> None:
    residuals = np.random.default_rng(3).normal(scale=2.0, size=300)
    estimate = fit_working_likelihood(residuals, min_outside_fraction=0.01)
    epsilons, sigmas = np.linspace(0.0, 4.0, 401), np.linspace(0.3, 3.0, 271)
    grid = np.array([[working_likelihood_loss(residuals, e, s) for s in sigmas] for e in epsilons])
    best_epsilon, best_sigma = np.unravel_index(np.argmin(grid), grid.shape)
    assert estimate.loss == pytest.approx(working_likelihood_loss(residuals, estimate.epsilon, estimate.sigma))
    assert estimate.loss <= grid.min() + 1e-9  # exact search is never beaten by the grid ...
    assert estimate.loss >= grid.min() - 0.05  # ... and the grid gets close to it
    assert estimate.epsilon == pytest.approx(epsilons[best_epsilon], abs=0.05)
    assert estimate.sigma == pytest.approx(sigmas[best_sigma], abs=0.02)


def test_min_outside_fraction_bounds_the_tube_for_uniform_noise() -> None:
    # Uniform residuals drive the unconstrained likelihood to σ → 0; the constraint keeps 10% outside.
    residuals = np.random.default_rng(4).uniform(-1, 1, size=1000)
    estimate = fit_working_likelihood(residuals, min_outside_fraction=0.1)
    assert np.mean(np.abs(residuals) > estimate.epsilon * estimate.sigma) >= 0.1 - 1e-12
    assert estimate.epsilon > 5.0  # uniform-like: the tube is the core, the Laplace tails are thin


def test_min_outside_count_hand_computed() -> None:
    # |r| = 0.2, 0.4, ..., 1.0 (n = 5). The 10% bound alone admits the tube e = 0.8 (one residual outside):
    # T = 0.2, σ = (0.2 + √(0.04 + 4·5·0.2·0.8)) / 10 = 0.2, ε = 4, G = 5 log 2 + 1.
    residuals = np.array([0.2, -0.4, 0.6, -0.8, 1.0])
    loose = fit_working_likelihood(residuals, min_outside_fraction=0.1)
    assert (loose.epsilon, loose.sigma, loose.at_bound) == (pytest.approx(4.0), pytest.approx(0.2), True)
    assert loose.loss == pytest.approx(5 * np.log(2) + 1)
    # Three residuals outside: candidates e ∈ {0, 0.2, 0.4}; G = 5.9116, 5.6636, 5.3198, so e = 0.4 with
    # T = 1.2 and σ = (1.2 + √(1.44 + 4·5·1.2·0.4)) / 10, on the bound.
    bounded = fit_working_likelihood(residuals, min_outside_fraction=0.1, min_outside_count=3)
    sigma = (1.2 + np.sqrt(11.04)) / 10
    assert bounded.sigma == pytest.approx(sigma)
    assert bounded.epsilon == pytest.approx(0.4 / sigma)
    assert bounded.loss == pytest.approx(5 * np.log(2 * (sigma + 0.4)) + 1.2 / sigma)
    assert bounded.at_bound
    # Where the likelihood optimum leaves enough residuals outside, the count changes nothing.
    gaussian = np.random.default_rng(8).normal(size=400)
    assert fit_working_likelihood(gaussian, min_outside_count=5) == fit_working_likelihood(gaussian)
    assert not fit_working_likelihood(gaussian).at_bound


def test_fit_working_likelihood_rejects_degenerate_input() -> None:
    with pytest.raises(ValueError, match="no spread"):
        fit_working_likelihood(np.zeros(10))
    with pytest.raises(ValueError, match="min_outside_fraction"):
        fit_working_likelihood(np.ones(10), min_outside_fraction=0.0)
    with pytest.raises(ValueError, match="finite"):
        fit_working_likelihood([1.0, np.nan, 2.0])
    with pytest.raises(ValueError, match="min_outside_count"):
        fit_working_likelihood(np.ones(10), min_outside_count=-1)


# Stated tolerance at n = 5000: |ε̂ - ε| <= 0.1 (1 + ε) and |σ̂/σ - 1| <= 0.05. The sampling standard
# deviations measured over 50 draws are about 0.04 / 0.05 / 0.08 for ε̂ and 0.015 for σ̂/σ (ε = 0.5 / 1 / 2),
# so the bounds sit at roughly four standard deviations.
@pytest.mark.parametrize("epsilon", [0.5, 1.0, 2.0])
def test_estimate_recovers_true_epsilon_on_working_density_draws(epsilon: float) -> None:
    sigma = 0.7
    draws = epsilon_laplace.rvs(epsilon, scale=sigma, size=5000, random_state=np.random.default_rng(5))
    estimate = fit_working_likelihood(draws)
    assert abs(estimate.epsilon - epsilon) <= 0.1 * (1 + epsilon)
    assert estimate.sigma / sigma == pytest.approx(1.0, abs=0.05)


# ---------------------------------------------------------------------------------------------------------
# The estimator


@parametrize_with_checks([WorkingLikelihoodSVR(random_state=0)])
def test_sklearn_estimator_checks(estimator, check) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmallSampleWarning)  # the checks' data sets have 10-30 samples
        check(estimator)


def test_estimator_recovers_true_epsilon_at_n_5000() -> None:
    # y = 1 + 2x + ε-Laplacian noise; a linear kernel, two folds and one estimate keep this at a few seconds.
    rng = np.random.default_rng(6)
    X = rng.uniform(-1, 1, size=(5000, 1))
    y = 1 + 2 * X[:, 0] + epsilon_laplace.rvs(1.0, scale=0.3, size=5000, random_state=rng)
    with pytest.warns(ConvergenceWarning, match="max_iter=1"):
        model = WorkingLikelihoodSVR(kernel="linear", cv=2, max_iter=1, random_state=0).fit(X, y)
    assert abs(model.epsilon_ - 1.0) <= 0.2
    assert model.sigma_ == pytest.approx(0.3, rel=0.05)
    assert model.n_iter_ == 1


def _sinc_data(n: int = 120, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.uniform(-3, 3, size=(n, 1))
    return X, np.sinc(X[:, 0]) + 0.1 * rng.normal(size=n)


def test_final_svr_uses_the_estimated_tube_and_noise_scaled_penalty() -> None:
    X, y = _sinc_data()
    assert WorkingLikelihoodSVR().noise_scaled_C is True  # eq. (5) is the default penalty
    scaled = WorkingLikelihoodSVR(C=2.0, noise_scaled_C=True, random_state=0).fit(X, y)
    sigma_standardised = scaled.sigma_ / scaled.y_scale_
    assert scaled.svr_.epsilon == pytest.approx(scaled.epsilon_ * sigma_standardised)
    assert pytest.approx(2.0 / sigma_standardised) == scaled.svr_.C
    assert (scaled.penalty_, scaled.noise_scaled_C_, scaled.penalty_cv_mse_) == ("C/sigma", True, None)
    fixed = WorkingLikelihoodSVR(C=2.0, noise_scaled_C=False, random_state=0).fit(X, y)
    assert fixed.svr_.C == 2.0
    assert (fixed.penalty_, fixed.noise_scaled_C_, fixed.penalty_cv_mse_) == ("C", False, None)


def _low_noise_sinc() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.uniform(-3, 3, size=(120, 1))
    return X, np.sinc(X[:, 0]) + 0.05 * rng.normal(size=120)


def _weak_signal_in_8_features() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(2)
    X = rng.normal(size=(100, 8))
    return X, 0.5 * X[:, 0] + rng.normal(size=100)


@pytest.mark.parametrize(("data", "keeps_scaled"), [(_low_noise_sinc, True), (_weak_signal_in_8_features, False)])
def test_auto_penalty_keeps_the_smaller_cross_validated_squared_error(data, keeps_scaled: bool) -> None:
    # eq. (7): with the kept (ε, σ) and the loop's folds, the out-of-fold MSE of SVR(C/σ) and of SVR(C), recomputed
    # here; the smaller one decides. Sinc with noise sd 0.05 (σ ≈ 0.17 sd of y): C/σ ≈ 6 follows the curve and
    # halves the error of C = 1. A weak linear signal among 8 features (σ ≈ 0.6): C/σ over-fits the noise and
    # C = 1 is kept (0.898 vs 0.932).
    X, y = data()
    model = WorkingLikelihoodSVR(noise_scaled_C="auto", random_state=0).fit(X, y)
    kept = next(e for e in model.estimates_ if (e.epsilon, e.sigma * model.y_scale_) == (model.epsilon_, model.sigma_))
    y_standardised = (y - model.y_mean_) / model.y_scale_
    folds = KFold(n_splits=model.cv, shuffle=True, random_state=0)
    mse = {
        rule: np.mean((y_standardised - cross_val_predict(model._svr(kept, rule), X, y_standardised, cv=folds)) ** 2)
        for rule in ("C/sigma", "C")
    }
    assert model.penalty_cv_mse_ == pytest.approx(mse)
    assert model.noise_scaled_C_ is keeps_scaled
    assert bool(mse["C/sigma"] <= mse["C"]) is keeps_scaled
    assert model.svr_.C == pytest.approx(1.0 / kept.sigma if keeps_scaled else 1.0)
    assert (mse["C/sigma"] < 0.5 * mse["C"]) if keeps_scaled else (mse["C"] < 0.97 * mse["C/sigma"])
    # the choice comes after the (ε, σ) loop, which runs with C/σ as for noise_scaled_C=True: same estimates
    scaled = WorkingLikelihoodSVR(noise_scaled_C=True, random_state=0).fit(X, y)
    assert (scaled.epsilon_, scaled.sigma_, scaled.n_iter_) == (model.epsilon_, model.sigma_, model.n_iter_)
    same_predictions = np.allclose(model.predict(X), scaled.predict(X))
    assert same_predictions is keeps_scaled


def test_noise_scaled_C_is_validated() -> None:
    X, y = _sinc_data()
    with pytest.raises(ValueError, match="noise_scaled_C must be True, False, 'signal_share' or 'auto'"):
        WorkingLikelihoodSVR(noise_scaled_C="yes").fit(X, y)
    for bad in [("C/sigma",), ("C", "C"), ("C", "C/2"), "C/sigma"]:
        with pytest.raises(ValueError, match="auto_penalties must be at least two distinct rules"):
            WorkingLikelihoodSVR(auto_penalties=bad).fit(X, y)
    with pytest.raises(ValueError, match="auto_own_descent must be True or False"):
        WorkingLikelihoodSVR(auto_own_descent="yes").fit(X, y)


def test_signal_share_hand_values() -> None:
    # eq. (8): v(1) = (1/3 + 1 + 2 + 2) / 2 = 8/3, so σ = 0.5 leaves 1 - 0.25 · 8/3 = 1/3 of the variance to f;
    # ε = 0 (Laplace, variance 2σ²) with σ = 0.6 leaves 1 - 0.72 = 0.28; noise above the total hits the floor.
    assert signal_share(1.0, 0.5) == pytest.approx(1.0 / 3.0)
    assert signal_share(0.0, 0.6) == pytest.approx(0.28)
    assert signal_share(1.5, 2.0) == 0.05
    assert signal_share(1.5, 2.0, floor=0.2) == 0.2
    with pytest.raises(ValueError, match="floor in"):
        signal_share(1.0, 0.5, floor=0.0)


def test_signal_share_penalty_is_C_tau2_over_sigma() -> None:
    X, y = _sinc_data()
    model = WorkingLikelihoodSVR(C=2.0, noise_scaled_C="signal_share", random_state=0).fit(X, y)
    sigma = model.sigma_ / model.y_scale_
    assert model.penalty_ == "C*tau2/sigma" and model.noise_scaled_C_ and model.penalty_cv_mse_ is None
    assert model.svr_.C == pytest.approx(2.0 * signal_share(model.epsilon_, sigma) / sigma)
    assert model.svr_.epsilon == pytest.approx(model.epsilon_ * sigma)


def test_auto_among_three_penalties_and_own_descents() -> None:
    X, y = _weak_signal_in_8_features()
    candidates = ("C/sigma", "C", "C*tau2/sigma")
    three = WorkingLikelihoodSVR(noise_scaled_C="auto", auto_penalties=candidates, random_state=0).fit(X, y)
    assert set(three.penalty_cv_mse_) == {"C/sigma", "C", "C*tau2/sigma"}
    assert three.penalty_ == min(three.penalty_cv_mse_, key=three.penalty_cv_mse_.get)
    two = WorkingLikelihoodSVR(noise_scaled_C="auto", random_state=0).fit(
        X, y
    )  # same descent, same folds: the shared entries agree
    assert {k: three.penalty_cv_mse_[k] for k in two.penalty_cv_mse_} == pytest.approx(two.penalty_cv_mse_)
    # own descents: each candidate's entry is the out-of-fold MSE of its own descent's kept estimate
    own = WorkingLikelihoodSVR(noise_scaled_C="auto", auto_own_descent=True, random_state=0).fit(X, y)
    fixed = WorkingLikelihoodSVR(noise_scaled_C=False, random_state=0).fit(X, y)
    scaled = WorkingLikelihoodSVR(noise_scaled_C=True, random_state=0).fit(X, y)
    assert own.penalty_cv_mse_["C/sigma"] == pytest.approx(two.penalty_cv_mse_["C/sigma"])
    kept_fixed = fixed.estimates_[fixed.n_iter_ - 2] if fixed.converged_ else fixed.estimates_[-1]
    y_standardised = (y - fixed.y_mean_) / fixed.y_scale_
    folds = KFold(n_splits=5, shuffle=True, random_state=0)
    r = y_standardised - cross_val_predict(fixed._svr(kept_fixed, "C"), X, y_standardised, cv=folds)
    assert own.penalty_cv_mse_["C"] == pytest.approx(np.mean(r**2))
    winner = fixed if own.penalty_ == "C" else scaled
    assert (own.epsilon_, own.sigma_, own.n_iter_) == (winner.epsilon_, winner.sigma_, winner.n_iter_)
    np.testing.assert_allclose(own.predict(X), winner.predict(X))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_estimator_is_affine_equivariant_in_y() -> None:
    # Two estimates: the search jumps between the discrete candidates of eq. (4), so over many estimates
    # libsvm's rounding-level differences (below) can send the two paths to different candidates.
    X, y = _sinc_data()
    base = WorkingLikelihoodSVR(max_iter=2, random_state=0).fit(X, y)
    moved = WorkingLikelihoodSVR(max_iter=2, random_state=0).fit(X, -50.0 * y + 3.0)
    # libsvm stops at a dual tolerance of 1e-3 (in standardised units), so rounding-level input changes move
    # the solution by about that much: compare at 5e-3 standardised units, i.e. 0.25 in units of 50 y.
    np.testing.assert_allclose(moved.predict(X), -50.0 * base.predict(X) + 3.0, atol=50.0 * 5e-3)
    assert moved.epsilon_ == pytest.approx(base.epsilon_, rel=0.02)
    assert moved.sigma_ == pytest.approx(50.0 * base.sigma_, rel=0.02)


def test_iteration_count_follows_max_iter_and_tol() -> None:
    X, y = _sinc_data()
    with pytest.warns(ConvergenceWarning):
        single = WorkingLikelihoodSVR(max_iter=1, random_state=0).fit(X, y)
    assert (single.n_iter_, single.converged_, len(single.loss_curve_)) == (1, False, 1)
    # with an infinite tolerance no second estimate counts as an improvement: the first one is kept
    lazy = WorkingLikelihoodSVR(max_iter=5, tol=np.inf, random_state=0).fit(X, y)
    assert (lazy.n_iter_, lazy.converged_) == (2, True)
    assert lazy.epsilon_ == lazy.estimates_[0].epsilon


def test_descent_keeps_the_best_scored_estimate_and_stops_before_max_iter() -> None:
    X, y = _sinc_data()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # neither a ConvergenceWarning nor a SmallSampleWarning at n = 120
        model = WorkingLikelihoodSVR(random_state=0).fit(X, y)
    losses = np.array(model.loss_curve_)
    assert model.converged_ and 2 <= model.n_iter_ < model.max_iter
    assert len(losses) == len(model.estimates_) == model.n_iter_
    # every accepted estimate lowered J by more than tol; the last one did not, so the one before it is kept
    assert np.all(np.diff(losses[:-1]) < -model.tol)
    assert losses[-1] > losses[-2] - model.tol
    kept = model.estimates_[-2]
    assert (model.epsilon_, model.sigma_) == (kept.epsilon, kept.sigma * model.y_scale_)
    # J (eq. 6) is G of eq. (2) per sample on the cross-fitted residuals of the SVR of eq. (5): recompute it
    y_standardised = (y - model.y_mean_) / model.y_scale_
    folds = KFold(n_splits=model.cv, shuffle=True, random_state=0)
    residuals = y_standardised - cross_val_predict(model._svr(kept), X, y_standardised, cv=folds)
    expected = working_likelihood_loss(residuals, kept.epsilon, kept.sigma) / len(y)
    assert losses[-2] == pytest.approx(expected)


def _small_linear_data(n: int, seed: int = 9) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1, 1, size=(n, 3))
    return X, 1 + X @ np.array([1.0, 0.6, 0.2]) + 0.05 * rng.normal(size=n)


def test_small_samples_warn_and_keep_min_outside_count_residuals_outside() -> None:
    X, y = _small_linear_data(16)
    with pytest.warns(SmallSampleWarning, match=f"n_samples=16 < {SMALL_SAMPLE_SIZE}.*at least 5 residuals"):
        model = WorkingLikelihoodSVR(random_state=0).fit(X, y)
    assert model.converged_ and model.n_iter_ < model.max_iter
    # below SMALL_SAMPLE_SIZE the residuals are leave-one-out: J of the first estimate from LOO residuals
    first = model.estimates_[0]
    y_standardised = (y - model.y_mean_) / model.y_scale_
    loo = y_standardised - cross_val_predict(model._svr(first), X, y_standardised, cv=LeaveOneOut())
    assert model.loss_curve_[0] == pytest.approx(working_likelihood_loss(loo, first.epsilon, first.sigma) / 16)
    with pytest.warns(SmallSampleWarning, match="no minimum count.*5-fold residuals"):
        WorkingLikelihoodSVR(min_outside_count=0, small_sample_loo=False, random_state=0).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        WorkingLikelihoodSVR(random_state=0).fit(*_small_linear_data(SMALL_SAMPLE_SIZE))


def test_small_sample_rules_narrow_the_tube_on_tiny_data() -> None:
    # 16 samples of a nearly noise-free linear function (noise sd 0.05, signal sd ~0.7). With 5-fold residuals
    # (fits on 12-13 samples) misfit dominates and the tube ratchets to ~0.9 sd of y; the count rule keeps it
    # a little narrower; leave-one-out residuals (fits on 15 samples) see the small noise: the tube vanishes.
    X, y = _small_linear_data(16)
    tube = lambda m: m.epsilon_ * m.sigma_ / m.y_scale_  # noqa: E731
    with pytest.warns(SmallSampleWarning):
        loose = WorkingLikelihoodSVR(min_outside_count=0, small_sample_loo=False, random_state=0).fit(X, y)
        counted = WorkingLikelihoodSVR(small_sample_loo=False, random_state=0).fit(X, y)
        default = WorkingLikelihoodSVR(random_state=0).fit(X, y)
    assert tube(counted) < tube(loose)
    assert counted.estimates_[0].at_bound  # the count rule, not the likelihood, set the first tube
    assert tube(default) < 0.05 < 0.5 < tube(counted)
