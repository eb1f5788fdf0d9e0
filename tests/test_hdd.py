"""HDD: Lorentz geometry, the hdd objective and hyperbolic pruning."""

from __future__ import annotations

import math
from dataclasses import asdict

import geoopt
import pytest
import torch
from torch import nn

from distillset.coreset.prune import (
    hyperbolic_prune,
    hyperbolic_scores,
    keep_lowest_scores,
    keep_spread_over_scores,
    kept_count,
    random_prune,
)
from distillset.geometry import (
    distance_to_origin,
    expmap0,
    expmap0_clamp_mask,
    geodesic_distance,
    hyperbolic_centroid,
    minkowski_inner,
    origin,
    projx,
)
from distillset.objectives import MatchingContext, get_objective

CURVATURES = [0.5, 1.0, 2.4]
F64 = torch.float64


def hyperbola_point(t: float, k: float) -> torch.Tensor:
    """The point at signed geodesic distance ``sqrt(k) t`` from the origin along the first axis of H^{1,k}."""
    return math.sqrt(k) * torch.tensor([math.cosh(t), math.sinh(t)], dtype=F64)


def random_features(n: int, dim: int, max_norm: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    directions = torch.nn.functional.normalize(torch.randn(n, dim, generator=g, dtype=F64), dim=-1)
    return directions * torch.rand(n, 1, generator=g, dtype=F64) * max_norm


def context() -> MatchingContext:
    return MatchingContext(iteration=0, total_iterations=1, num_classes=2, class_sizes=torch.tensor([5, 5]))


# --- geometry -----------------------------------------------------------------------------------


def test_minkowski_inner_hand_value() -> None:
    u = torch.tensor([2.0, 1.0, 3.0], dtype=F64)
    v = torch.tensor([5.0, 4.0, -1.0], dtype=F64)
    assert minkowski_inner(u, v).item() == -10.0 + 4.0 - 3.0


@pytest.mark.parametrize("k", CURVATURES)
@pytest.mark.parametrize("max_norm", [None, 10.0])
def test_expmap0_lies_on_hyperboloid(k: float, max_norm: float | None) -> None:
    points = expmap0(random_features(64, 16, max_norm=40.0), k, max_norm=max_norm)
    assert points.shape == (64, 17)
    quad = minkowski_inner(points, points)
    torch.testing.assert_close(quad, torch.full_like(quad, -k), rtol=1e-9, atol=1e-9 * points[:, 0].max().item() ** 2)
    assert (points[:, 0] > 0).all()
    torch.testing.assert_close(minkowski_inner(origin(16, k), origin(16, k)), torch.tensor(-k, dtype=F64))


@pytest.mark.parametrize("k", CURVATURES)
def test_expmap0_matches_closed_form_and_geoopt(k: float) -> None:
    v = random_features(32, 8, max_norm=30.0, seed=1)
    norm = v.norm(dim=-1, keepdim=True)
    expected_unclamped = math.sqrt(k) * torch.cat(
        [torch.cosh(norm / math.sqrt(k)), torch.sinh(norm / math.sqrt(k)) * v / norm], dim=-1
    )
    torch.testing.assert_close(expmap0(v, k), expected_unclamped, rtol=1e-12, atol=0)
    geoopt_lift = geoopt.Lorentz(k=torch.tensor(k, dtype=F64)).expmap0(torch.nn.functional.pad(v, (1, 0)))
    torch.testing.assert_close(expmap0(v, k), geoopt_lift, rtol=1e-12, atol=0)

    clamped_norm = (norm / math.sqrt(k)).clamp_max(10.0)  # the reference's EXP_MAX_NORM rule
    expected_clamped = math.sqrt(k) * torch.cat([torch.cosh(clamped_norm), torch.sinh(clamped_norm) * v / norm], dim=-1)
    torch.testing.assert_close(expmap0(v, k, max_norm=10.0), expected_clamped, rtol=1e-12, atol=0)


@pytest.mark.parametrize("k", CURVATURES)
def test_geodesic_distance_hand_values(k: float) -> None:
    x, y = hyperbola_point(0.3, k), hyperbola_point(-1.2, k)
    assert geodesic_distance(x, y, k).item() == pytest.approx(math.sqrt(k) * 1.5, rel=1e-12)
    assert geodesic_distance(y, x, k).item() == pytest.approx(geodesic_distance(x, y, k).item(), rel=1e-15)
    assert distance_to_origin(y, k).item() == pytest.approx(math.sqrt(k) * 1.2, rel=1e-12)
    # arcosh clamps z^2 - 1 at 1e-15 (reference numerics): d(x, x) = sqrt(k) log(1 + sqrt(1e-15)), not 0
    assert geodesic_distance(x, x, k).item() == pytest.approx(math.sqrt(k) * math.log1p(math.sqrt(1e-15)), rel=1e-6)


@pytest.mark.parametrize("k", CURVATURES)
def test_geodesic_distance_symmetric_and_matches_geoopt(k: float) -> None:
    points = expmap0(random_features(20, 6, max_norm=5.0, seed=2), k)
    pairwise = geodesic_distance(points[:, None], points[None], k)
    torch.testing.assert_close(pairwise, pairwise.T, rtol=1e-12, atol=0)
    # d(x, x) = sqrt(k) arcosh(1 + delta) ~ sqrt(2 k delta), with delta the rounding of <x,x>_L / k ~ eps x_0^2 / k
    cancellation_floor = torch.sqrt(2 * k * 4 * torch.finfo(F64).eps * points[:, 0] ** 2 / k)
    assert (pairwise.diagonal() <= cancellation_floor + 1e-7).all()
    reference = geoopt.Lorentz(k=torch.tensor(k, dtype=F64)).dist(points[:, None], points[None])
    torch.testing.assert_close(pairwise, reference, rtol=1e-12, atol=0)


@pytest.mark.parametrize("k", CURVATURES)
def test_distance_from_origin_equals_feature_norm(k: float) -> None:
    v = random_features(50, 12, max_norm=8.0, seed=3) + 0.01
    torch.testing.assert_close(distance_to_origin(expmap0(v, k), k), v.norm(dim=-1), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(
        geodesic_distance(origin(12, k), expmap0(v, k), k), v.norm(dim=-1), rtol=1e-9, atol=1e-9
    )


@pytest.mark.parametrize("k", CURVATURES)
def test_clamp_engages_exactly_above_threshold(k: float) -> None:
    radius = 10.0 * math.sqrt(k)
    axis = torch.tensor([[0.0, 1.0, 0.0]], dtype=F64)  # exact norms
    v = axis * torch.tensor([[radius * (1 - 1e-9)], [radius], [radius * (1 + 1e-9)], [3 * radius]], dtype=F64)
    assert expmap0_clamp_mask(v, k, max_norm=10.0).tolist() == [False, False, True, True]
    assert not expmap0_clamp_mask(v, k, max_norm=None).any()
    distances = distance_to_origin(expmap0(v, k, max_norm=10.0), k)
    torch.testing.assert_close(distances, v.norm(dim=-1).clamp_max(radius), rtol=1e-9, atol=0)
    # a clamped row keeps only its direction: no gradient along v, some gradient across it
    direction = torch.nn.functional.normalize(torch.tensor([[1.0, -2.0, 0.5]], dtype=F64), dim=-1)
    v_grad = (direction * 2 * radius).requires_grad_(True)
    expmap0(v_grad, k, max_norm=10.0)[0, 1:].sum().backward()
    assert torch.dot(v_grad.grad[0], direction[0]).abs().item() < 1e-9
    assert v_grad.grad.norm().item() > 1e-3


def test_projx_recomputes_time_coordinate() -> None:
    x = torch.tensor([7.0, 3.0, 4.0], dtype=F64)
    torch.testing.assert_close(projx(x, 2.0), torch.tensor([math.sqrt(27.0), 3.0, 4.0], dtype=F64))


@pytest.mark.parametrize("k", CURVATURES)
def test_centroid_properties(k: float) -> None:
    point = expmap0(random_features(1, 5, max_norm=4.0, seed=4), k)
    torch.testing.assert_close(hyperbolic_centroid(point.repeat(7, 1), k), point[0], rtol=1e-12, atol=1e-12)

    points = expmap0(random_features(30, 5, max_norm=10.0, seed=5), k, max_norm=10.0)
    centroid = hyperbolic_centroid(points, k)
    assert minkowski_inner(centroid, centroid).item() == pytest.approx(-k, rel=1e-10)
    one_hot = torch.zeros(30, dtype=F64)
    one_hot[17] = 3.0  # the scale of the weights does not matter
    # <a,a>_L cancels terms of size x_0^2 (up to ~1e8 at the clamp): relative error ~ eps x_0^2 / k
    torch.testing.assert_close(hyperbolic_centroid(points, k, weights=one_hot), points[17], rtol=1e-7, atol=0)

    # two points: the centroid is the geodesic midpoint
    x, y = hyperbola_point(0.4, k), hyperbola_point(2.0, k)
    torch.testing.assert_close(hyperbolic_centroid(torch.stack([x, y]), k), hyperbola_point(1.2, k), rtol=1e-12, atol=0)


def test_centroid_rejects_bad_weights() -> None:
    points = expmap0(random_features(3, 2, max_norm=1.0), 1.0)
    with pytest.raises(ValueError, match="non-negative"):
        hyperbolic_centroid(points, weights=torch.tensor([1.0, -1.0, 0.5], dtype=F64))
    with pytest.raises(ValueError, match="one per point"):
        hyperbolic_centroid(points, weights=torch.ones(2, dtype=F64))
    with pytest.raises(ValueError, match="curvature parameter k"):
        expmap0(points, k=0.0)


# --- objective ----------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1.0, 2.4])
def test_hdd_loss_hand_value_on_one_ray(k: float) -> None:
    """One feature per side, both on the same ray: d = | ||v|| - ||w|| | (clamp inactive)."""
    direction = torch.nn.functional.normalize(torch.tensor([[1.0, 2.0, 2.0]]), dim=-1)
    objective = get_objective("hdd", curvature_k=k, weight=20.0)
    loss = objective.loss([direction * 1.5], [direction * 4.0], [0], context())
    assert loss.item() == pytest.approx(20.0 * 2.5, rel=1e-6)


def test_hdd_loss_zero_for_identical_positive_otherwise() -> None:
    real = [torch.randn(16, 32, generator=torch.Generator().manual_seed(c)) for c in range(2)]
    objective = get_objective("hdd")
    assert objective.loss(real, [r.clone() for r in real], [0, 1], context()).item() < 1e-5
    shifted = [r + 0.1 for r in real]
    assert objective.loss(real, shifted, [0, 1], context()).item() > 0.1


@pytest.mark.parametrize("feature_scale", [1.0, "unit-mean-norm"])
def test_hdd_gradients_reach_synthetic_and_are_finite(feature_scale: float | str) -> None:
    g = torch.Generator().manual_seed(0)
    real = [20 * torch.randn(64, 32, generator=g) for _ in range(2)]  # norms ~ 110: clamp engaged at scale 1
    synthetic = [torch.randn(4, 32, generator=g).requires_grad_(True) for _ in range(2)]
    loss = get_objective("hdd", feature_scale=feature_scale).loss(real, synthetic, [0, 1], context())
    assert loss.dtype == torch.float32
    loss.backward()
    for s in synthetic:
        assert torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0


def test_hdd_diagnostics_and_feature_scale() -> None:
    real = [torch.tensor([[3.0, 4.0], [30.0, 40.0]])]  # norms 5 and 50; clamp radius 10 at k=1
    synthetic = [torch.tensor([[6.0, 8.0]])]
    ctx = context()
    get_objective("hdd").loss(real, synthetic, [0], ctx)
    assert ctx.log["hdd/clamped_fraction_real"] == 0.5
    assert ctx.log["hdd/clamped_fraction_syn"] == 0.0
    assert ctx.log["hdd/feature_norm_real"] == pytest.approx(27.5)
    assert ctx.log["hdd/feature_scale"] == 1.0

    ctx = context()
    get_objective("hdd", feature_scale="unit-mean-norm").loss(real, synthetic, [0], ctx)
    assert ctx.log["hdd/feature_scale"] == pytest.approx(1 / 27.5)
    assert ctx.log["hdd/feature_norm_real"] == pytest.approx(1.0)
    assert ctx.log["hdd/feature_norm_syn"] == pytest.approx(10 / 27.5)
    assert ctx.log["hdd/clamped_fraction_real"] == 0.0


def test_hdd_config_and_validation() -> None:
    objective = get_objective("hdd", curvature_k=2.4, weight=100, max_norm=None, dtype="float32")
    assert asdict(objective.config()) == {
        "curvature_k": 2.4, "weight": 100.0, "max_norm": None, "feature_scale": 1.0, "dtype": "float32",
    }
    for bad in ({"curvature_k": -1.0}, {"weight": 0.0}, {"max_norm": 0.0}, {"feature_scale": "median"},
                {"dtype": "float16"}):
        with pytest.raises(ValueError):
            get_objective("hdd", **bad)
    with pytest.raises(ValueError, match="same net"):
        get_objective("hdd").loss([torch.ones(2, 3)], [torch.ones(1, 4)], [0], context())


# --- pruning ------------------------------------------------------------------------------------


class FlattenNet(nn.Module):
    """A 'network' whose embedding is the flattened image (optionally through a random linear map)."""

    def __init__(self, dim: int, random_projection: bool = False) -> None:
        super().__init__()
        self.projection = nn.Linear(dim, dim, bias=False) if random_projection else nn.Identity()

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(x.flatten(1))


def test_kept_counts_per_class() -> None:
    labels = torch.tensor([0] * 10 + [1] * 7 + [2] * 1 + [5] * 25)
    assert [kept_count(n, 0.2) for n in (10, 7, 1, 25, 6000)] == [2, 1, 1, 5, 1200]
    kept = random_prune(labels, 0.2, seed=3)
    assert torch.bincount(labels[kept], minlength=6).tolist() == [2, 1, 1, 0, 0, 5]
    assert torch.equal(kept, random_prune(labels, 0.2, seed=3))
    assert not torch.equal(kept, random_prune(labels, 0.2, seed=4))
    assert torch.equal(random_prune(labels, 1.0), torch.arange(labels.numel()))
    for bad in (0.0, -0.1, 1.5, True):
        with pytest.raises(ValueError, match="keep_ratio"):
            random_prune(labels, bad)


def test_keep_lowest_scores_breaks_ties_by_index() -> None:
    labels = torch.tensor([1, 0, 1, 1, 0])
    scores = torch.tensor([0.5, 9.0, 0.5, 0.1, 1.0])
    assert keep_lowest_scores(scores, labels, 0.34).tolist() == [3, 4]  # 1 of 3 and 1 of 2
    assert keep_lowest_scores(scores, labels, 0.5).tolist() == [0, 3, 4]  # 2 of 3: the 0.5-tie keeps index 0


def test_keep_spread_over_scores_takes_evenly_spaced_ranks() -> None:
    labels = torch.tensor([0] * 10 + [1] * 4)
    scores = torch.cat([torch.arange(10.0).flip(0), torch.tensor([0.3, 0.1, 0.4, 0.2])])
    # class 0: 3 of 10 at ranks floor((i + 1/2) 10 / 3) = 1, 5, 8 of the ascending scores 0..9 (index 9 - rank);
    # class 1: 1 of 4 at rank floor(4 / 2) = 2, the score 0.3 at index 10
    assert keep_spread_over_scores(scores, labels, 0.3).tolist() == [1, 4, 8, 10]
    assert keep_spread_over_scores(scores, labels, 1.0).tolist() == list(range(14))  # all ranks


@pytest.mark.parametrize("reference", ["centroid", "origin"])
def test_hyperbolic_prune_drops_outlier_first(reference: str) -> None:
    g = torch.Generator().manual_seed(0)
    class0 = torch.tensor([1.0, 1.0, 0.0, 0.0]) + 0.05 * torch.randn(9, 4, generator=g)
    class0 = torch.cat([class0, torch.tensor([[-6.0, 0.0, 5.0, 3.0]])])  # image 9: far out
    class1 = torch.tensor([0.0, 0.0, 1.0, 1.0]) + 0.05 * torch.randn(5, 4, generator=g)
    images = torch.cat([class0, class1]).view(-1, 1, 2, 2)
    labels = torch.tensor([0] * 10 + [1] * 5)
    options = {"feature_net_factory": lambda: FlattenNet(4), "num_nets": 1, "reference": reference}
    scores = hyperbolic_scores(images, labels, **options)
    assert scores[:10].argmax().item() == 9
    kept = hyperbolic_prune(images, labels, 0.9, **options)
    assert 9 not in kept.tolist()
    assert torch.bincount(labels[kept]).tolist() == [9, 5]  # 0.9 * 5 = 4.5 rounds half up
    spread = hyperbolic_prune(images, labels, 0.3, selection="spread", **options)  # 3 of class 0, 2 of class 1
    central = hyperbolic_prune(images, labels, 0.3, **options)
    assert torch.bincount(labels[spread]).tolist() == [3, 2] == torch.bincount(labels[central]).tolist()
    assert scores[spread[labels[spread] == 0]].max() > scores[central[labels[central] == 0]].max()
    with pytest.raises(ValueError, match="unknown selection 'edge'"):
        hyperbolic_prune(images, labels, 0.3, selection="edge", **options)


def test_hyperbolic_prune_deterministic_and_leaves_global_rng() -> None:
    g = torch.Generator().manual_seed(1)
    images = torch.randn(40, 1, 4, 4, generator=g)
    labels = torch.arange(40) % 3
    options = {"feature_net_factory": lambda: FlattenNet(16, random_projection=True), "num_nets": 3,
               "feature_scale": "unit-mean-norm", "curvature_k": 2.4}
    torch.manual_seed(123)
    first = hyperbolic_prune(images, labels, 0.25, **options)
    after = torch.rand(1)
    torch.manual_seed(123)
    assert torch.equal(first, hyperbolic_prune(images, labels, 0.25, **options))
    assert torch.equal(after, torch.rand(1))
    assert torch.bincount(labels[first]).tolist() == [kept_count(14, 0.25), kept_count(13, 0.25), kept_count(13, 0.25)]
    different_nets = hyperbolic_scores(images, labels, **{**options, "seed": 7})
    assert not torch.equal(hyperbolic_scores(images, labels, **options), different_nets)
    with pytest.raises(TypeError, match="embed"):
        hyperbolic_scores(images, labels, feature_net_factory=lambda: nn.Linear(16, 16))
