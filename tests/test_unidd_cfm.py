"""UniDD filter identities, the ridge-filter objectives, CFM's schedule and the FFC spectrum tools."""

from __future__ import annotations

import math
from dataclasses import asdict

import pytest
import torch
from sklearn.linear_model import Ridge

from distillset.evaluate.spectrum import ffc_eigenvalues, ffc_spectra, plot_ffc_spectra
from distillset.objectives import MatchingContext, get_objective
from distillset.objectives.cfm import BetaSchedule, CurriculumFrequencyMatching
from distillset.objectives.dm import DistributionMatching
from distillset.objectives.unidd import (
    GradientDescentFilter,
    HighPassMatching,
    IdentityFilter,
    LinearFilter,
    LowPassMatching,
    RidgeFilter,
    apply_spectral_filter,
    correlation_statistics,
    feature_feature_correlation,
    feature_label_correlation,
    filter_distance,
    linear_head_gradient,
    random_fourier_features,
    ridge_projection,
    ridge_projection_distance,
    ridge_weights,
    signal_distance,
)

F64 = torch.float64


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _features(n: int, d: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    return torch.randn(n, d, generator=_generator(seed), dtype=F64) + shift


def _one_hot(sizes: list[int]) -> torch.Tensor:
    return torch.eye(len(sizes), dtype=F64).repeat_interleave(torch.tensor(sizes), dim=0)


def _context(iteration: int = 0, total: int = 10, num_classes: int = 3) -> MatchingContext:
    return MatchingContext(iteration, total, num_classes, torch.full((num_classes,), 100))


# ---------------------------------------------------------------- statistics and filters (Eqs. 1-5)


def test_ffc_and_flc_match_hand_computed_values() -> None:
    x = torch.tensor([[1.0, 2.0], [3.0, 0.0]], dtype=F64)
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=F64)
    # X^T X = [[1+9, 2], [2, 4]], X^T Y = [[1, 3], [2, 0]], both / n = 2
    assert torch.equal(feature_feature_correlation(x), torch.tensor([[5.0, 1.0], [1.0, 2.0]], dtype=F64))
    assert torch.equal(feature_label_correlation(x, y), torch.tensor([[0.5, 1.5], [1.0, 0.0]], dtype=F64))


@pytest.mark.parametrize(
    "spectral_filter",
    [IdentityFilter(), LinearFilter(), RidgeFilter(0.3), GradientDescentFilter(0.05, 7)],
    ids=["identity", "linear", "ridge", "gradient-descent"],
)
def test_closed_form_filters_equal_the_eigendecomposition_definition(spectral_filter) -> None:
    statistics = correlation_statistics(_features(40, 6, seed=1, shift=0.5), _one_hot([15, 25]))
    by_eigh = apply_spectral_filter(statistics.ffc, spectral_filter.response, statistics.flc)
    torch.testing.assert_close(spectral_filter.apply(statistics.ffc, statistics.flc), by_eigh)
    torch.testing.assert_close(
        spectral_filter.matrix(statistics.ffc), apply_spectral_filter(statistics.ffc, spectral_filter.response)
    )


def test_ridge_filter_is_flat_for_large_beta_and_high_pass_for_small_beta() -> None:
    eigenvalues = torch.tensor([100.0, 1.0, 0.01], dtype=F64)
    flat = RidgeFilter(1e6).response(eigenvalues)
    assert (flat.max() / flat.min()).item() == pytest.approx(1.0, abs=1e-4)
    sharp = RidgeFilter(1e-4).response(eigenvalues)
    # gain ratio small/large eigenvalue: (100 + 1e-4) / (0.01 + 1e-4) ~ 9901
    assert (sharp[-1] / sharp[0]).item() == pytest.approx((100 + 1e-4) / (0.01 + 1e-4))


# ---------------------------------------------------------------- DM and kernel MMD (Eqs. 6-7)


def test_dm_loss_equals_identity_filtered_flc_distance() -> None:
    sizes_real, ipc = [30, 30, 30], 4
    real = [_features(n, 8, seed=c, shift=c) for c, n in enumerate(sizes_real)]
    synthetic = [_features(ipc, 8, seed=10 + c) for c in range(3)]
    dm = DistributionMatching().loss(real, synthetic, [0, 1, 2], _context())
    real_statistics = correlation_statistics(torch.cat(real), _one_hot(sizes_real))
    synthetic_statistics = correlation_statistics(torch.cat(synthetic), _one_hot([ipc] * 3))
    # balanced classes: FLC column c = mean_c / K, so DM = K^2 * ||FLC_r - FLC_s||^2
    torch.testing.assert_close(dm, 9 * signal_distance(real_statistics, synthetic_statistics, IdentityFilter()))
    assert filter_distance(real_statistics, synthetic_statistics, IdentityFilter()).item() == 0.0


def test_kernel_mmd_equals_identity_filter_on_random_fourier_features() -> None:
    real, synthetic = _features(25, 3, seed=2), _features(7, 3, seed=3, shift=0.7)
    frequencies = torch.randn(64, 3, generator=_generator(4), dtype=F64)

    def kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # mean_j cos(t_j^T (a - b))
        return torch.cos(torch.einsum("md,ijd->ijm", frequencies, a[:, None] - b[None])).mean(-1)

    mmd_v_statistic = (
        kernel(real, real).mean() - 2 * kernel(real, synthetic).mean() + kernel(synthetic, synthetic).mean()
    )
    lifted = [random_fourier_features(x, frequencies) for x in (real, synthetic)]
    statistics = [correlation_statistics(z, torch.ones(z.shape[0], 1, dtype=F64)) for z in lifted]
    torch.testing.assert_close(signal_distance(*statistics, IdentityFilter()), mmd_v_statistic)


def test_random_fourier_distance_approximates_gaussian_kernel_mmd() -> None:
    real, synthetic = _features(20, 2, seed=5), _features(10, 2, seed=6, shift=0.5)
    frequencies = torch.randn(40_000, 2, generator=_generator(7), dtype=F64)  # Gaussian kernel, bandwidth 1
    gaussian = lambda a, b: torch.exp(-0.5 * torch.cdist(a, b).pow(2))  # noqa: E731
    exact = gaussian(real, real).mean() - 2 * gaussian(real, synthetic).mean() + gaussian(synthetic, synthetic).mean()
    lifted = [random_fourier_features(x, frequencies).mean(0) for x in (real, synthetic)]
    assert (lifted[0] - lifted[1]).pow(2).sum().item() == pytest.approx(exact.item(), rel=0.05)


# ---------------------------------------------------------------- gradient matching (Eq. 8)


def _autograd_head_gradient(features: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    w = weight.clone().requires_grad_(True)
    ((features @ w - labels).pow(2).sum() / (2 * features.shape[0])).backward()
    return w.grad


def test_gradient_matching_of_a_linear_head_equals_its_filter_form() -> None:
    real_x, real_y = _features(50, 6, seed=8, shift=0.3), _one_hot([20, 30])
    syn_x, syn_y = _features(6, 6, seed=9), _one_hot([3, 3])
    weight = torch.randn(6, 2, generator=_generator(10), dtype=F64)
    real, synthetic = correlation_statistics(real_x, real_y), correlation_statistics(syn_x, syn_y)
    def gradient_matching_loss(w: torch.Tensor) -> torch.Tensor:
        return (_autograd_head_gradient(real_x, real_y, w) - _autograd_head_gradient(syn_x, syn_y, w)).pow(2).sum()

    own_loss = gradient_matching_loss(weight)
    filter_form = (linear_head_gradient(real, weight) - linear_head_gradient(synthetic, weight)).pow(2).sum()
    torch.testing.assert_close(filter_form, own_loss)
    # the paper's {lambda, 1} bound: ||dG||^2 <= 2 (||W||_2^2 ||dFFC||_F^2 + ||dFLC||_F^2)
    bound = 2 * (
        torch.linalg.matrix_norm(weight, ord=2).pow(2) * filter_distance(real, synthetic, LinearFilter())
        + signal_distance(real, synthetic, IdentityFilter())
    )
    assert own_loss <= bound
    # at W = 0 (a zero-initialised head) gradient matching is DM's FLC matching
    zero_head_loss = gradient_matching_loss(torch.zeros_like(weight))
    torch.testing.assert_close(zero_head_loss, signal_distance(real, synthetic, IdentityFilter()))


# ---------------------------------------------------------------- KRR / FrePo (Eq. 9) and MTT (Eq. 10)


@pytest.mark.parametrize("n", [5, 40], ids=["kernel-form", "feature-form"])
def test_ridge_weights_equal_sklearn_ridge(n: int) -> None:
    x, y, beta = _features(n, 10, seed=11), _one_hot([n // 2, n - n // 2]), 0.2
    reference = Ridge(alpha=n * beta, fit_intercept=False).fit(x.numpy(), y.numpy()).coef_.T
    torch.testing.assert_close(ridge_weights(x, y, beta), torch.from_numpy(reference))


def test_krr_matching_is_ridge_filtered_flc_distance_and_frepo_excess_loss() -> None:
    beta = 0.5
    real_x, real_y = _features(60, 8, seed=12, shift=0.2), _one_hot([30, 30])
    syn_x, syn_y = _features(4, 8, seed=13), _one_hot([2, 2])
    real, synthetic = correlation_statistics(real_x, real_y), correlation_statistics(syn_x, syn_y)
    ridge = RidgeFilter(beta)
    w_real, w_syn = ridge_weights(real_x, real_y, beta), ridge_weights(syn_x, syn_y, beta)
    torch.testing.assert_close(signal_distance(real, synthetic, ridge), (w_real - w_syn).pow(2).sum())
    # FrePo/KIP: kernel-form predictions on real data, K_rs (K_ss + m beta I)^{-1} Y_s
    m = syn_x.shape[0]
    dual = real_x @ syn_x.T @ torch.linalg.solve(syn_x @ syn_x.T + m * beta * torch.eye(m, dtype=F64), syn_y)
    torch.testing.assert_close(dual, real_x @ ridge.apply(synthetic.ffc, synthetic.flc))
    # FrePo's regularised real loss minus its minimum = ||W_s - W_r||^2 weighted by (FFC_r + beta I)
    regularised_loss = lambda w: (real_x @ w - real_y).pow(2).mean(0).sum() + beta * w.pow(2).sum()  # noqa: E731
    difference = w_syn - w_real
    weighted = torch.trace(difference.T @ (real.ffc + beta * torch.eye(8, dtype=F64)) @ difference)
    torch.testing.assert_close(regularised_loss(w_syn) - regularised_loss(w_real), weighted)


def test_gradient_descent_filter_reproduces_sgd_on_a_linear_head_and_mtt_loss() -> None:
    learning_rate, real_steps, syn_steps = 0.1, 12, 5

    def trained_head(features: torch.Tensor, labels: torch.Tensor, steps: int) -> torch.Tensor:
        weight = torch.zeros(features.shape[1], labels.shape[1], dtype=F64, requires_grad=True)
        optimizer = torch.optim.SGD([weight], lr=learning_rate)
        for _ in range(steps):
            optimizer.zero_grad()
            ((features @ weight - labels).pow(2).sum() / (2 * features.shape[0])).backward()
            optimizer.step()
        return weight.detach()

    real_x, real_y = _features(40, 5, seed=14), _one_hot([20, 20])
    syn_x, syn_y = _features(6, 5, seed=15), _one_hot([3, 3])
    real, synthetic = correlation_statistics(real_x, real_y), correlation_statistics(syn_x, syn_y)
    expert, student = trained_head(real_x, real_y, real_steps), trained_head(syn_x, syn_y, syn_steps)
    real_filter = GradientDescentFilter(learning_rate, real_steps)
    syn_filter = GradientDescentFilter(learning_rate, syn_steps)
    torch.testing.assert_close(real_filter.apply(real.ffc, real.flc), expert)
    torch.testing.assert_close(apply_spectral_filter(synthetic.ffc, syn_filter.response, synthetic.flc), student)
    # MTT's normalised loss from W_0 = 0: ||W_N^s - W_M^r||^2 / ||W_M^r||^2
    mtt = (student - expert).pow(2).sum() / expert.pow(2).sum()
    expert_energy = real_filter.apply(real.ffc, real.flc).pow(2).sum()
    filter_form = signal_distance(real, synthetic, real_filter, syn_filter) / expert_energy
    torch.testing.assert_close(filter_form, mtt)
    assert GradientDescentFilter(0.3, 1).response(torch.tensor([0.0, 5.0])).tolist() == pytest.approx([0.3, 0.3])


# ---------------------------------------------------------------- the ridge projection filter term (Eq. 12)


@pytest.mark.parametrize("n", [4, 30], ids=["kernel-form", "feature-form"])
def test_ridge_projection_distance_is_the_scaled_ridge_filter_term(n: int) -> None:
    beta = 0.3
    real = correlation_statistics(_features(50, 12, seed=16, shift=0.4), torch.ones(50, 1, dtype=F64))
    synthetic_x = _features(n, 12, seed=17)
    synthetic = correlation_statistics(synthetic_x, torch.ones(n, 1, dtype=F64))
    projection = ridge_projection(real.ffc, beta)
    torch.testing.assert_close(projection, apply_spectral_filter(real.ffc, lambda lam: lam / (lam + beta)))
    expected = beta**2 * filter_distance(real, synthetic, RidgeFilter(beta))
    torch.testing.assert_close(ridge_projection_distance(projection, synthetic_x, beta), expected)


# ---------------------------------------------------------------- the registered objectives


def _class_features(num_classes: int = 3, ipc: int = 4, d: int = 16) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    real = [_features(40, d, seed=20 + c, shift=0.5 * c).float().abs() for c in range(num_classes)]
    synthetic = [_features(ipc, d, seed=30 + c).float().abs().requires_grad_(True) for c in range(num_classes)]
    return real, synthetic


def test_lowpass_with_huge_beta_is_dm_normalised_by_the_real_class_means() -> None:
    real, synthetic = _class_features()
    objective = LowPassMatching(beta=1e9, filter_weight=0.0, scale=1.0)
    loss = objective.loss(real, synthetic, [0, 1, 2], _context())
    dm = DistributionMatching().loss(real, synthetic, [0, 1, 2], _context())
    real_mean_energy = sum(r.mean(0).pow(2).sum() for r in real)
    torch.testing.assert_close(loss, dm / real_mean_energy, rtol=1e-5, atol=0.0)


@pytest.mark.parametrize("name", ["lowpass", "highpass", "cfm"])
def test_objectives_send_finite_gradients_to_synthetic_features(name: str) -> None:
    real, synthetic = _class_features()
    context = _context(iteration=7)
    loss = get_objective(name).loss(real, synthetic, [0, 1, 2], context)
    loss.backward()
    assert loss.dtype == torch.float32 and loss.item() > 0
    for features in synthetic:
        assert torch.isfinite(features.grad).all() and features.grad.abs().sum() > 0
    assert {"signal_term", "filter_term", "ridge_beta", "ridge_beta_relative"} <= set(context.log)


def test_objective_is_zero_at_the_real_features_and_invariant_to_feature_scale() -> None:
    real, _ = _class_features()
    objective = HighPassMatching(beta=0.01)
    same = objective.loss(real, [r.clone() for r in real], [0, 1, 2], _context())
    assert same.item() == pytest.approx(0.0, abs=1e-6)
    real, synthetic = _class_features()
    scaled = objective.loss([7 * r for r in real], [7 * s for s in synthetic], [0, 1, 2], _context())
    torch.testing.assert_close(scaled, objective.loss(real, synthetic, [0, 1, 2], _context()))


def test_lowpass_and_highpass_defaults_and_config() -> None:
    assert get_objective("lowpass").config().beta > get_objective("highpass").config().beta
    cfm = get_objective("cfm", schedule="step", beta_start=2.0, beta_end=0.02, num_stages=3, filter_weight=0.5)
    assert isinstance(cfm, CurriculumFrequencyMatching)
    assert asdict(cfm.config()) == {
        "schedule": "step", "beta_start": 2.0, "beta_end": 0.02, "interpolation": "linear", "num_stages": 3,
        "schedule_over": "iterations", "slot_groups": None, "signal_weight": 1.0, "filter_weight": 0.5,
        "scale": 1000.0, "beta_scale_power": 0.0,
    }


@pytest.mark.parametrize("iteration", [0, 5, 9])
def test_beta_scale_power_multiplies_the_loss_by_the_relative_beta_to_that_power(iteration: int) -> None:
    real, synthetic = _class_features()
    plain, flattened = CurriculumFrequencyMatching(), CurriculumFrequencyMatching(beta_scale_power=0.5)
    context = _context(iteration=iteration)
    beta = plain.relative_beta(context)  # 1 at the start, falling to 1e-3 at the end
    expected = plain.loss(real, synthetic, [0, 1, 2], context) * beta**0.5
    torch.testing.assert_close(flattened.loss(real, synthetic, [0, 1, 2], _context(iteration=iteration)), expected)
    if iteration == 0:
        assert beta == 1.0  # the first step is unchanged
    else:
        assert beta < 1.0


# ---------------------------------------------------------------- CFM's schedule (Eq. 13)


@pytest.mark.parametrize(
    ("shape", "interpolation", "progress", "expected"),
    [
        ("cosine", "linear", 0.0, 1.0),
        ("cosine", "linear", 0.5, 0.505),
        ("cosine", "linear", 0.25, 1.0 - 0.99 * (1 - math.cos(math.pi / 4)) / 2),
        ("cosine", "linear", 1.0, 0.01),
        ("linear", "linear", 0.25, 1.0 - 0.99 * 0.25),
        ("linear", "log", 0.5, 0.1),
        ("cosine", "log", 1.0, 0.01),
        ("step", "linear", 0.3, 1.0 - 0.99 / 3),
        ("step", "linear", 0.99, 0.01),
        ("step", "log", 0.5, 0.01 ** (2 / 3)),
    ],
)
def test_beta_schedule_values(shape: str, interpolation: str, progress: float, expected: float) -> None:
    schedule = BetaSchedule(shape, start=1.0, end=0.01, interpolation=interpolation, num_stages=4)
    assert schedule.value(progress) == pytest.approx(expected)


def test_cosine_schedule_is_the_official_formula_when_end_goes_to_zero() -> None:
    schedule = BetaSchedule("cosine", start=0.1, end=1e-12)
    for b in range(10):
        assert schedule.value(b / 10) == pytest.approx(0.1 * (1 + math.cos(math.pi * b / 10)) / 2, abs=1e-11)


def test_cfm_logs_the_scheduled_beta_at_start_middle_and_end() -> None:
    real, synthetic = _class_features()
    objective = CurriculumFrequencyMatching(beta_start=1.0, beta_end=0.001)
    logged = []
    for iteration in (0, 50, 100):
        context = _context(iteration=iteration, total=100)
        objective.loss(real, synthetic, [0, 1, 2], context)
        logged.append(context.log["ridge_beta_relative"])
        trace = float(torch.cat(real).double().pow(2).sum(1).mean())
        assert context.log["ridge_beta"] == pytest.approx(logged[-1] * trace)
    assert logged == pytest.approx([1.0, 0.5005, 0.001])


def test_cfm_over_slots_matches_each_slot_group_at_its_own_beta_for_the_whole_run() -> None:
    """The official code's schedule (docs/unidd_cfm.md Sec. 6): group g of the image slots is matched at the
    beta of progress g / G whatever the iteration; the loss is the mean of the groups' fixed-beta losses."""
    real = [_features(40, 6, seed=c) for c in range(3)]
    synthetic = [_features(4, 6, seed=10 + c, shift=0.3).requires_grad_() for c in range(3)]
    objective = CurriculumFrequencyMatching(beta_start=1.0, beta_end=0.01, schedule_over="slots", slot_groups=2)
    betas = [BetaSchedule(start=1.0, end=0.01).value(g / 2) for g in range(2)]
    assert betas == pytest.approx([1.0, 0.505])
    for iteration in (0, 99):
        context = _context(iteration=iteration, total=100)
        loss = objective.loss(real, synthetic, [0, 1, 2], context)
        groups = [LowPassMatching(beta=beta).loss(real, [s[2 * g : 2 * g + 2] for s in synthetic], [0, 1, 2],
                                                  _context(iteration=iteration, total=100))
                  for g, beta in enumerate(betas)]
        assert loss.item() == pytest.approx((sum(groups) / 2).item(), rel=1e-12)
        assert context.log["ridge_beta_relative"] == 1.0
        assert context.log["ridge_beta_relative_last_group"] == pytest.approx(0.505)
    loss.backward()
    assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in synthetic)
    # one group per slot by default (4 slots here); with one group it is the low-pass objective itself
    per_slot = CurriculumFrequencyMatching(schedule_over="slots")
    context = _context()
    per_slot.loss(real, synthetic, [0, 1, 2], context)
    assert context.log["ridge_beta_relative_last_group"] == pytest.approx(per_slot.schedule.value(3 / 4))
    single = CurriculumFrequencyMatching(beta_start=1.0, schedule_over="slots", slot_groups=1)
    assert single.loss(real, synthetic, [0, 1, 2], _context()).item() == pytest.approx(
        LowPassMatching(beta=1.0).loss(real, synthetic, [0, 1, 2], _context()).item(), rel=1e-12)


# ---------------------------------------------------------------- invalid parameters


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: RidgeFilter(0.0), "finite beta > 0"),
        (lambda: GradientDescentFilter(0.1, 0), "integer steps >= 1"),
        (lambda: GradientDescentFilter(-1.0, 3), "learning_rate > 0"),
        (lambda: BetaSchedule("exponential"), "unknown beta schedule shape 'exponential'; choose one of: linear"),
        (lambda: BetaSchedule(interpolation="cubic"), "unknown beta interpolation 'cubic'"),
        (lambda: BetaSchedule(end=0.0), "beta_end"),
        (lambda: BetaSchedule("step", num_stages=1), "num_stages >= 2"),
        (lambda: LowPassMatching(beta=-1.0), "beta .* must be a finite number > 0"),
        (lambda: HighPassMatching(scale=-2.0), "scale must be a finite number >= 0"),
        (lambda: CurriculumFrequencyMatching(beta_scale_power=math.nan), "beta_scale_power must be a finite"),
        (lambda: CurriculumFrequencyMatching(signal_weight=0.0, filter_weight=0.0), "both 0"),
        (lambda: CurriculumFrequencyMatching(schedule_over="epochs"), "unknown schedule_over 'epochs'"),
        (lambda: CurriculumFrequencyMatching(schedule_over="slots", slot_groups=0), "slot_groups must be"),
    ],
)
def test_invalid_parameters_raise_clear_errors(build, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


def test_invalid_inputs_raise_clear_errors() -> None:
    real, synthetic = _class_features()
    with pytest.raises(ValueError, match="one real and one synthetic feature batch per class"):
        LowPassMatching().loss(real, synthetic[:2], [0, 1, 2], _context())
    with pytest.raises(ValueError, match="differ in dimension: 16 vs 8"):
        LowPassMatching().loss(real, [s[:, :8] for s in synthetic], [0, 1, 2], _context())
    with pytest.raises(ValueError, match="total_iterations >= 1"):
        CurriculumFrequencyMatching().loss(real, synthetic, [0, 1, 2], _context(total=0))
    with pytest.raises(ValueError, match="labels must be"):
        feature_label_correlation(torch.ones(4, 3), torch.ones(5, 2))
    with pytest.raises(ValueError, match="frequencies must be"):
        random_fourier_features(torch.ones(4, 3), torch.ones(5, 2))


# ---------------------------------------------------------------- spectrum analysis


@pytest.mark.parametrize("n", [5, 30], ids=["n<d", "n>=d"])
def test_ffc_eigenvalues_are_sorted_non_negative_and_exact(n: int) -> None:
    features = _features(n, 12, seed=40).abs()
    eigenvalues = ffc_eigenvalues(features)
    assert eigenvalues.shape == (12,)
    assert (eigenvalues >= 0).all() and (eigenvalues[:-1] >= eigenvalues[1:]).all()
    reference = torch.linalg.eigvalsh(feature_feature_correlation(features)).flip(0).clamp_min(0)
    torch.testing.assert_close(eigenvalues, reference, atol=1e-10, rtol=1e-8)


def test_spectra_per_class_and_plot_writes_a_png(tmp_path) -> None:
    real_x, real_y = _features(60, 10, seed=41).abs(), torch.arange(3).repeat(20)
    syn_x, syn_y = _features(6, 10, seed=42).abs(), torch.arange(3).repeat(2)
    other_x, other_y = _features(2, 10, seed=43).abs(), torch.tensor([0, 1])
    per_class = ffc_spectra(real_x, real_y, {"a": (syn_x, syn_y), "b": (other_x, other_y)}, per_class=True)
    assert [panel.label for panel in per_class] == ["class 0", "class 1", "class 2"]
    assert [list(panel.synthetic) for panel in per_class] == [["a", "b"], ["a", "b"], ["a"]]  # b has no class 2
    assert all(int((panel.synthetic["a"] > 1e-12).sum()) <= 2 for panel in per_class)  # 2 images a class: rank <= 2
    torch.testing.assert_close(per_class[2].real, ffc_eigenvalues(real_x[real_y == 2]))
    (pooled,) = ffc_spectra(real_x, real_y, {"a": (syn_x, syn_y)})
    torch.testing.assert_close(pooled.synthetic["a"], ffc_eigenvalues(syn_x))
    path = plot_ffc_spectra([*per_class, pooled], tmp_path / "spectrum.png", title="test", levels={"beta": 0.1})
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="class 2 has synthetic but no real features"):
        ffc_spectra(real_x[real_y < 2], real_y[real_y < 2], {"a": (syn_x, syn_y)}, per_class=True)
    with pytest.raises(ValueError, match="synthetic 'a' labels must be"):
        ffc_spectra(real_x, real_y, {"a": (syn_x, syn_y[:3])})
    with pytest.raises(ValueError, match="at least one synthetic set"):
        ffc_spectra(real_x, real_y, {})
    with pytest.raises(ValueError, match="at least one SpectrumPanel"):
        plot_ffc_spectra([], tmp_path / "empty.png")


def test_equal_beta_levels_share_one_label() -> None:
    from distillset.evaluate.spectrum import _merged_levels

    merged = _merged_levels({"cfm start": 2.5, "lowpass": 2.5 * (1 + 1e-12), "cfm end": 0.0025})
    assert merged == {2.5: ["cfm start", "lowpass"], 0.0025: ["cfm end"]}
