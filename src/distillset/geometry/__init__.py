"""Non-Euclidean geometry used by the matching objectives (currently the Lorentz model for HDD)."""

from __future__ import annotations

from distillset.geometry.lorentz import (
    distance_to_origin,
    expmap0,
    expmap0_clamp_mask,
    geodesic_distance,
    hyperbolic_centroid,
    minkowski_inner,
    origin,
    projx,
)

__all__ = [
    "distance_to_origin",
    "expmap0",
    "expmap0_clamp_mask",
    "geodesic_distance",
    "hyperbolic_centroid",
    "minkowski_inner",
    "origin",
    "projx",
]
