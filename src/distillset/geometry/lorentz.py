"""Lorentz (hyperboloid) model of hyperbolic space, in the geoopt convention.

``H^{n,k} = {x in R^{n+1} : <x,x>_L = -k, x_0 > 0}`` with sectional curvature ``-1/k`` (``k > 0``).
The formulas follow HDD (Li et al., NeurIPS 2025, Sec. 3; code ``Guang000/HDD``,
``DM-HDD/geoopt/manifolds/lorentz/math.py`` and ``DM-HDD/main_DM.py``); equation numbers refer to
docs/hdd.md. The Minkowski inner product,
projection, exponential map and geodesic distance are delegated to ``geoopt.manifolds.lorentz.math``
(geoopt 0.5.1), whose numerics equal the reference's vendored copy except for one change: the
reference clamps the exponential map's norm (``EXP_MAX_NORM = 10``), which geoopt 0.5.1 does not.
:func:`expmap0` re-adds that clamp as the optional ``max_norm``. Work in float64 (see docs/hdd.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from geoopt.manifolds.lorentz import math as lorentz_math
from torch import Tensor

CENTROID_EPS = 1e-8  # floor on |<a,a>_L| in the centroid, as the reference (Chen et al. 2022 code)
UNIT_MEAN_NORM = "unit-mean-norm"


def check_curvature(k: float) -> float:
    """Validate the curvature parameter ``k`` (curvature ``-1/k``) and return it as a float."""
    if isinstance(k, bool) or not (isinstance(k, (int, float)) and math.isfinite(k) and k > 0):
        raise ValueError(f"curvature parameter k must be a finite number > 0 (curvature -1/k), got {k!r}")
    return float(k)


def _curvature_tensor(k: float, like: Tensor) -> Tensor:
    """``k`` as a 0-dim tensor of ``like``'s dtype/device (geoopt's functions need a tensor)."""
    return torch.as_tensor(check_curvature(k), dtype=like.dtype, device=like.device)


def check_max_norm(max_norm: float | None) -> float | None:
    """Validate the exp-map clamp ``max_norm`` (a number > 0, or None for no clamp)."""
    if max_norm is None:
        return None
    if isinstance(max_norm, bool) or not (
        isinstance(max_norm, (int, float)) and math.isfinite(max_norm) and max_norm > 0
    ):
        raise ValueError(f"max_norm must be a finite number > 0, or None to disable the clamp, got {max_norm!r}")
    return float(max_norm)


def _clamp_radius(k: float, max_norm: float) -> float:
    """Euclidean feature norm above which :func:`expmap0` clamps: ``max_norm * sqrt(k)``."""
    return check_max_norm(max_norm) * math.sqrt(check_curvature(k))


def minkowski_inner(u: Tensor, v: Tensor, *, keepdim: bool = False) -> Tensor:
    """``<u,v>_L = -u_0 v_0 + sum_{i>=1} u_i v_i`` over the last dimension (Eq. 1)."""
    return lorentz_math.inner(u, v, keepdim=keepdim)


def origin(
    dim: int, k: float = 1.0, *, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None
) -> Tensor:
    """The hyperboloid's origin ``p0 = (sqrt(k), 0, ..., 0)`` in ``R^{dim+1}`` (``dim`` = feature dimension)."""
    point = torch.zeros(dim + 1, dtype=dtype, device=device)
    point[0] = math.sqrt(check_curvature(k))
    return point


def projx(x: Tensor, k: float = 1.0) -> Tensor:
    """Project onto the hyperboloid by recomputing the time coordinate: ``x_0 = sqrt(k + ||x_{1:n}||^2)`` (Eq. 3)."""
    return lorentz_math.project(x, k=_curvature_tensor(k, x))


def expmap0_clamp_mask(features: Tensor, k: float = 1.0, *, max_norm: float | None) -> Tensor:
    """Boolean mask of the feature rows that :func:`expmap0` clamps: ``||v|| / sqrt(k) > max_norm``."""
    if max_norm is None:
        return torch.zeros(features.shape[:-1], dtype=torch.bool, device=features.device)
    return torch.linalg.vector_norm(features, dim=-1) > _clamp_radius(k, max_norm)


def expmap0(features: Tensor, k: float = 1.0, *, max_norm: float | None = None) -> Tensor:
    """Lift Euclidean features ``v`` (shape ``(..., n)``) onto ``H^{n,k}`` (shape ``(..., n+1)``).

    ``v`` is read as the tangent vector ``u = (0, v)`` at the origin and mapped by
    ``exp0(u) = (sqrt(k) cosh(r/sqrt(k)), sqrt(k) sinh(r/sqrt(k)) v/r)``, ``r = ||v||``, then :func:`projx`
    (Eq. 2; geoopt ``_expmap0``). With ``max_norm`` set, ``r/sqrt(k)`` is
    clamped at ``max_norm`` as the reference code does (``EXP_MAX_NORM = 10``): a clamped row keeps its
    direction and lands at geodesic distance ``max_norm * sqrt(k)`` from the origin, so no gradient flows
    through its norm, only through its direction.
    """
    k_tensor = _curvature_tensor(k, features)
    if max_norm is not None:
        radius = _clamp_radius(k, max_norm)
        norm = torch.linalg.vector_norm(features, dim=-1, keepdim=True)
        features = features * (radius / norm.clamp_min(radius))
    lifted = lorentz_math.expmap0(F.pad(features, (1, 0)), k=k_tensor)
    return lorentz_math.project(lifted, k=k_tensor)


def geodesic_distance(x: Tensor, y: Tensor, k: float = 1.0, *, keepdim: bool = False) -> Tensor:
    """``d_k(x,y) = sqrt(k) arcosh(-<x,y>_L / k)`` (Eq. 4, geoopt ``dist``; arcosh computed in float64 with
    ``z^2 - 1`` clamped at 1e-15, so ``d(x,x)`` is about ``3e-8 sqrt(k)``, not exactly 0)."""
    return lorentz_math.dist(x, y, k=_curvature_tensor(k, x), keepdim=keepdim)


def distance_to_origin(x: Tensor, k: float = 1.0, *, keepdim: bool = False) -> Tensor:
    """``d_k(p0, x) = sqrt(k) arcosh(x_0 / sqrt(k))``; equals ``||v||`` for ``x = expmap0(v)`` without clamp."""
    return lorentz_math.dist0(x, k=_curvature_tensor(k, x), keepdim=keepdim)


def hyperbolic_centroid(points: Tensor, k: float = 1.0, *, weights: Tensor | None = None) -> Tensor:
    """Closed-form Lorentzian centroid of ``points`` (shape ``(..., N, n+1)``) -> ``(..., n+1)``.

    ``a = sum_i w_i z_i`` (the mean when ``weights`` is None), ``c = sqrt(k) a / sqrt(|<a,a>_L|)``: the
    point of ``H^{n,k}`` on the ray through the ambient mean (Eq. 5; Law et al. 2019; HDD's ``centroid``, adapted
    from Chen et al. 2022). It minimises the summed squared Lorentzian distance, not the Frechet mean of
    geodesic distances. ``weights`` (shape ``(N,)``, non-negative, not all zero) need not sum to 1: the
    renormalisation removes their scale.
    """
    if points.ndim < 2 or points.shape[-2] == 0:
        raise ValueError(f"points must have shape (..., N, n+1) with N >= 1, got {tuple(points.shape)}")
    if weights is None:
        ambient_mean = points.mean(dim=-2)
    else:
        if weights.shape != points.shape[-2:-1]:
            raise ValueError(
                f"weights must have shape ({points.shape[-2]},) (one per point), got {tuple(weights.shape)}"
            )
        if bool((weights < 0).any()) or not bool((weights > 0).any()):
            raise ValueError(
                "weights must be non-negative with at least one positive entry (else the centroid is undefined)"
            )
        ambient_mean = weights.to(points.dtype) @ points
    norm = (-minkowski_inner(ambient_mean, ambient_mean, keepdim=True)).abs().clamp_min(CENTROID_EPS).sqrt()
    return _curvature_tensor(k, points).sqrt() * ambient_mean / norm


def check_feature_scale(feature_scale: float | str) -> float | str:
    """Validate a feature scale: a number > 0, or ``'unit-mean-norm'``."""
    if feature_scale == UNIT_MEAN_NORM:
        return feature_scale
    if isinstance(feature_scale, bool) or not (
        isinstance(feature_scale, (int, float)) and math.isfinite(feature_scale) and feature_scale > 0
    ):
        raise ValueError(f"feature_scale must be a number > 0 or '{UNIT_MEAN_NORM}', got {feature_scale!r}")
    return float(feature_scale)


def resolve_feature_scale(feature_scale: float | str, reference_features: Sequence[Tensor]) -> Tensor:
    """The factor features are multiplied by before the lift, as a detached 0-dim tensor.

    A number is used as is. ``'unit-mean-norm'`` gives ``1 / mean_i ||v_i||`` over all rows of
    ``reference_features`` (the real features of the step), so the real features have mean norm 1
    and the clamp at ``max_norm * sqrt(k)`` only touches rows ``max_norm * sqrt(k)`` times longer than
    the mean. The same factor is applied to the synthetic features, and no gradient flows through it.
    """
    first = reference_features[0]
    if feature_scale != UNIT_MEAN_NORM:
        return torch.tensor(float(feature_scale), dtype=first.dtype, device=first.device)
    norms = torch.cat([torch.linalg.vector_norm(f.detach(), dim=-1) for f in reference_features])
    return 1.0 / norms.mean().clamp_min(torch.finfo(norms.dtype).tiny)
