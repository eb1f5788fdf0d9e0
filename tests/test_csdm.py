"""SDD / CSDM: spectral kernels, characteristic functions, amplitude-phase split, class weights."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from sklearn.gaussian_process.kernels import RBF, Matern
from sklearn.metrics.pairwise import laplacian_kernel
from torch import nn

from distillset.objectives import MatchingContext, get_objective, objective_names
from distillset.objectives.csdm import log_count_alpha, uniform_alpha
from distillset.objectives.dm import mean_embedding_distance
from distillset.objectives.spectral import (
    SPECTRAL_KERNELS,
    amplitude_phase_terms,
    cf_distance,
    empirical_cf,
    get_spectral_kernel,
    kernel_mmd2,
)
from distillset.registry import UnknownNameError

KERNEL_NAMES = ["gaussian", "laplacian", "matern12", "matern32", "matern52"]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _context(class_sizes: list[float], seed: int = 0) -> MatchingContext:
    return MatchingContext(0, 10, len(class_sizes), torch.tensor(class_sizes), _gen(seed))


def _unit_frequencies(kernel: str, num: int, dim: int, seed: int = 0) -> torch.Tensor:
    return get_spectral_kernel(kernel).sample_unit_frequencies(
        num, dim, _gen(seed), torch.device("cpu"), torch.float64
    )


# --- kernels -------------------------------------------------------------------------------


def test_registry_lists_kernels_and_objectives():
    assert SPECTRAL_KERNELS.names() == sorted(KERNEL_NAMES)
    assert {"sdd", "csdm"} <= set(objective_names())


@pytest.mark.parametrize(
    ("name", "reference"),
    [
        ("gaussian", lambda x, y, s: RBF(length_scale=s)(x, y)),
        ("laplacian", lambda x, y, s: laplacian_kernel(x, y, gamma=1 / s)),
        ("matern12", lambda x, y, s: Matern(length_scale=s, nu=0.5)(x, y)),
        ("matern32", lambda x, y, s: Matern(length_scale=s, nu=1.5)(x, y)),
        ("matern52", lambda x, y, s: Matern(length_scale=s, nu=2.5)(x, y)),
    ],
)
def test_kernel_gram_matches_scikit_learn(name, reference):
    x = torch.randn(6, 3, generator=_gen(0), dtype=torch.float64)
    y = torch.randn(4, 3, generator=_gen(1), dtype=torch.float64)
    expected = torch.from_numpy(reference(x.numpy(), y.numpy(), 1.7))
    torch.testing.assert_close(get_spectral_kernel(name).gram(x, y, 1.7), expected)


def test_median_bandwidth_by_hand():
    points = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 8.0]])
    # L2 distances 5, 8, 5 -> 5;  L1 distances 7, 8, 7 -> 7
    assert float(get_spectral_kernel("gaussian").median_bandwidth(points)) == 5.0
    assert float(get_spectral_kernel("laplacian").median_bandwidth(points)) == 7.0


# --- characteristic functions ----------------------------------------------------------------


def test_empirical_cf_by_hand():
    features = torch.tensor([[0.0], [math.pi / 2]], dtype=torch.float64)
    frequencies = torch.tensor([[1.0], [2.0]], dtype=torch.float64)
    # t=1: (1 + i)/2;  t=2: (1 + e^{i pi})/2 = 0
    expected = torch.tensor([0.5 + 0.5j, 0.0 + 0.0j], dtype=torch.complex128)
    torch.testing.assert_close(empirical_cf(features, frequencies), expected)


def test_identical_sets_have_zero_distance():
    x = torch.randn(20, 8, generator=_gen(0), dtype=torch.float64)
    cf = empirical_cf(x, _unit_frequencies("gaussian", 64, 8))
    assert float(cf_distance(cf, cf).max()) == 0.0
    amplitude, phase = amplitude_phase_terms(cf, cf)
    assert float(amplitude.max()) == 0.0 and float(phase.max()) < 1e-15
    for name in ("sdd", "csdm"):
        loss = get_objective(name).loss([x.float()], [x.float().clone()], [0], _context([100.0]))
        assert float(loss) == pytest.approx(0.0, abs=1e-4)


def test_amplitude_plus_phase_equals_cf_distance():
    x = torch.randn(30, 6, generator=_gen(0), dtype=torch.float64)
    y = 0.7 * torch.randn(12, 6, generator=_gen(1), dtype=torch.float64) + 0.4
    t = _unit_frequencies("gaussian", 500, 6)
    cf_x, cf_y = empirical_cf(x, t), empirical_cf(y, t)
    amplitude, phase = amplitude_phase_terms(cf_x, cf_y)
    torch.testing.assert_close(amplitude + phase, cf_distance(cf_x, cf_y), rtol=0, atol=1e-12)
    # the atan2-free phase term equals 2|phi_x||phi_y|(1 - cos(theta_x - theta_y))
    angle_gap = torch.angle(cf_x) - torch.angle(cf_y)
    torch.testing.assert_close(phase, 2 * cf_x.abs() * cf_y.abs() * (1 - torch.cos(angle_gap)), rtol=0, atol=1e-12)


def test_translation_changes_phase_only():
    x = torch.randn(25, 4, generator=_gen(0), dtype=torch.float64)
    t = _unit_frequencies("gaussian", 200, 4)
    amplitude, phase = amplitude_phase_terms(empirical_cf(x, t), empirical_cf(x + 0.5, t))
    assert float(amplitude.max()) < 1e-12  # |phi| is translation invariant
    assert float(phase.mean()) > 1e-3


@pytest.mark.parametrize("name", KERNEL_NAMES)
def test_sdd_approximates_kernel_mmd2(name):
    """Eq. 2: mean_j |phi_x(t_j) - phi_y(t_j)|^2 with t_j ~ Lambda is a Monte-Carlo MMD_k^2."""
    x = torch.randn(40, 5, generator=_gen(0), dtype=torch.float64)
    y = 1.5 * torch.randn(30, 5, generator=_gen(1), dtype=torch.float64) + 0.3
    kernel = get_spectral_kernel(name)
    bandwidth = kernel.median_bandwidth(torch.cat([x, y]))
    t = _unit_frequencies(name, 20_000, 5, seed=2)
    sdd = cf_distance(empirical_cf(x / bandwidth, t), empirical_cf(y / bandwidth, t)).mean()
    mmd2 = kernel_mmd2(x, y, kernel, bandwidth)
    assert float(mmd2) > 0.05
    assert abs(float(sdd / mmd2) - 1) < 0.05


def test_sdd_objective_is_mmd2_of_normalised_features_at_median_bandwidth():
    real = torch.randn(50, 16, generator=_gen(0)) + 1.0
    synthetic = 1.3 * torch.randn(10, 16, generator=_gen(1)) + 1.0
    context = _context([50.0])
    loss = get_objective("sdd", scale=1.0, num_frequencies=20_000).loss([real], [synthetic], [0], context)
    kernel = get_spectral_kernel("gaussian")
    real_n, syn_n = F.normalize(real, dim=1), F.normalize(synthetic, dim=1)
    bandwidth = kernel.median_bandwidth(real_n)
    assert context.log["sdd/bandwidth"] == pytest.approx(float(bandwidth))
    assert float(loss) == pytest.approx(float(kernel_mmd2(real_n, syn_n, kernel, bandwidth)), rel=0.05)


@pytest.mark.parametrize("name", ["sdd", "csdm"])
def test_a_class_with_one_real_image_takes_the_median_over_real_and_synthetic(name):
    real = torch.randn(1, 16, generator=_gen(0))  # an extreme long-tailed class
    synthetic = torch.randn(5, 16, generator=_gen(1)).requires_grad_(True)
    context = _context([1.0, 500.0])
    loss = get_objective(name, scale=1.0).loss([real], [synthetic], [0], context)
    pooled = F.normalize(torch.cat([real, synthetic.detach()]), dim=1)
    expected = get_spectral_kernel("gaussian").median_bandwidth(pooled)
    assert context.log[f"{name}/bandwidth"] == pytest.approx(float(expected))
    loss.backward()
    assert torch.isfinite(loss) and float(synthetic.grad.abs().sum()) > 0


def test_sdd_sees_variance_where_mean_matching_is_blind():
    x = torch.randn(40, 3, generator=_gen(0))
    x = x - x.mean(dim=0)
    y = 3 * x  # same mean, different spread
    assert float(mean_embedding_distance(x, y)) < 1e-10
    sdd = get_objective("sdd", scale=1.0, normalize_features=False, bandwidth=1.0)
    assert float(sdd.loss([x], [y], [0], _context([40.0]))) > 0.05


# --- gradients -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["sdd", "csdm"])
def test_gradient_reaches_synthetic_images_through_a_conv_net(name):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten())
    real_images = torch.randn(16, 1, 8, 8, generator=_gen(0))
    synthetic_images = torch.randn(3, 1, 8, 8, generator=_gen(1), requires_grad=True)
    with torch.no_grad():
        real = net(real_images)
    loss = get_objective(name).loss([real], [net(synthetic_images)], [1], _context([100.0, 10.0]))
    loss.backward()
    assert synthetic_images.grad is not None
    assert torch.isfinite(synthetic_images.grad).all() and float(synthetic_images.grad.abs().sum()) > 0


def test_gradient_finite_when_a_cf_vanishes():
    """phi_s(1) = (e^{0i} + e^{i pi})/2 = 0: |phi_s| is not differentiable there, the loss must stay finite."""
    synthetic = torch.tensor([[0.0], [math.pi]], dtype=torch.float64, requires_grad=True)
    real = torch.tensor([[0.3], [0.9]], dtype=torch.float64)
    t = torch.tensor([[1.0]], dtype=torch.float64)
    amplitude, phase = amplitude_phase_terms(empirical_cf(real, t), empirical_cf(synthetic, t))
    (amplitude + phase).sum().backward()
    assert torch.isfinite(synthetic.grad).all()


# --- class-aware weighting -------------------------------------------------------------------


def test_log_count_alpha_by_hand():
    sizes = torch.tensor([6000.0, 600.0, 60.0])  # log-positions 1, 1/2, 0
    torch.testing.assert_close(log_count_alpha(sizes, 0.7, 0.3), torch.tensor([0.7, 0.5, 0.3], dtype=torch.float64))
    balanced = torch.tensor([500.0, 500.0])
    torch.testing.assert_close(log_count_alpha(balanced, 0.8, 0.2), torch.tensor([0.5, 0.5], dtype=torch.float64))
    torch.testing.assert_close(uniform_alpha(sizes, 0.7, 0.3), torch.full((3,), 0.5, dtype=torch.float64))


def test_tail_class_gets_less_amplitude_weight():
    sizes = torch.tensor([5000.0 * 0.01 ** (c / 9) for c in range(10)])  # make_long_tailed profile, rho = 100
    alpha = get_objective("csdm").amplitude_weights(sizes)
    assert float(alpha[0]) == pytest.approx(0.7) and float(alpha[-1]) == pytest.approx(0.3)
    assert bool((alpha[1:] < alpha[:-1]).all())


def test_csdm_class_loss_is_weighted_amplitude_phase_sum():
    real = torch.randn(40, 12, generator=_gen(0))
    synthetic = 0.5 * torch.randn(5, 12, generator=_gen(1)) + 0.2
    sizes = [6000.0, 600.0, 60.0]
    csdm = get_objective("csdm", scale=1.0)
    for class_index, alpha in enumerate([0.7, 0.5, 0.3]):
        context = _context(sizes, seed=3)
        loss = csdm.loss([real], [synthetic], [class_index], context)
        amplitude, phase = context.log["csdm/amplitude"], context.log["csdm/phase"]
        assert amplitude > 0 and phase > 0
        assert float(loss) == pytest.approx(2 * (alpha * amplitude + (1 - alpha) * phase), rel=1e-5)


def test_uniform_csdm_equals_sdd():
    real = [torch.randn(30, 10, generator=_gen(c)) for c in range(2)]
    synthetic = [torch.randn(4, 10, generator=_gen(10 + c)) for c in range(2)]
    sdd = get_objective("sdd").loss(real, synthetic, [0, 1], _context([300.0, 3.0], seed=5))
    csdm = get_objective("csdm", weighting="uniform").loss(real, synthetic, [0, 1], _context([300.0, 3.0], seed=5))
    assert float(csdm) == pytest.approx(float(sdd), rel=1e-5)


# --- frequencies and reproducibility ---------------------------------------------------------


def test_frequencies_follow_the_generator():
    real, synthetic = [torch.randn(20, 8, generator=_gen(0))], [torch.randn(3, 8, generator=_gen(1))]
    sdd = get_objective("sdd")
    first = sdd.loss(real, synthetic, [0], _context([20.0], seed=7))
    assert float(sdd.loss(real, synthetic, [0], _context([20.0], seed=7))) == float(first)
    assert float(sdd.loss(real, synthetic, [0], _context([20.0], seed=8))) != float(first)
    no_generator = MatchingContext(0, 1, 1, torch.tensor([20.0]))
    own = [float(get_objective("sdd", seed=4).loss(real, synthetic, [0], no_generator)) for _ in range(2)]
    assert own[0] == own[1]


def test_laplacian_frequencies_are_cauchy():
    t = _unit_frequencies("laplacian", 20_000, 2).flatten()
    # standard Cauchy: median |t| = 1, P(|t| < 1) = 1/2
    assert float(t.abs().median()) == pytest.approx(1.0, rel=0.03)


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"bandwidth": -1.0}, "bandwidth must be positive"),
        ({"bandwidth": "mean"}, "bandwidth must be 'median'"),
        ({"num_frequencies": 0}, "num_frequencies must be a positive int"),
        ({"scale": 0.0}, "scale must be positive"),
        ({"alpha_head": 1.0}, "alpha_head must lie strictly between 0 and 1"),
        ({"alpha_tail": 0.0}, "alpha_tail must lie strictly between 0 and 1"),
    ],
)
def test_invalid_parameters_raise(params, message):
    with pytest.raises(ValueError, match=message):
        get_objective("csdm", **params)


def test_unknown_names_list_the_choices():
    with pytest.raises(UnknownNameError, match="gaussian"):
        get_objective("sdd", kernel="rbf")
    with pytest.raises(UnknownNameError, match="log-count"):
        get_objective("csdm", weighting="linear")


def test_invalid_inputs_raise():
    csdm = get_objective("csdm")
    real, synthetic = torch.randn(10, 4), torch.randn(2, 4)
    with pytest.raises(ValueError, match="at least 2 samples"):  # (the objective pools a lone real sample)
        get_spectral_kernel("gaussian").median_bandwidth(real[:1])
    with pytest.raises(ValueError, match="same D"):
        csdm.loss([real], [torch.randn(2, 5)], [0], _context([10.0]))
    with pytest.raises(ValueError, match="positive counts"):
        csdm.loss([real], [synthetic], [0], _context([10.0, 0.0]))
    with pytest.raises(ValueError, match="no entry in context.class_sizes"):
        csdm.loss([real], [synthetic], [3], _context([10.0, 5.0]))
    with pytest.raises(ValueError, match="one real and one synthetic feature batch per class"):
        csdm.loss([real], [synthetic, synthetic], [0], _context([10.0]))
