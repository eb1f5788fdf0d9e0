"""Method presets: a method name resolves to engine settings plus an objective.

``dm``/``hdd``/any registered objective name runs in the DM loop (fresh random network each iteration,
one SGD step on the loss summed over classes). ``idm`` and ``idm+<objective>`` run IDM's loop (queue of
partly trained networks, 2×2 partition-and-expansion, class-aware CE regulariser, one step per class).
"""

from __future__ import annotations

from typing import Any

from distillset.objectives import objective_names
from distillset.registry import UnknownNameError

# Defaults from the reference code of each method (see docs/methods.md).
OBJECTIVE_DEFAULTS: dict[str, dict[str, Any]] = {
    "hdd": {"curvature_k": 1.0, "weight": 20.0},  # DM-HDD/main_DM.py
}
IDM_SETTINGS: dict[str, Any] = {
    "network_source": "queue",
    "expansion_factor": 2,
    "ce_weight": 0.1,
    "step_per_class": True,
    "lr_img": 0.2,
}
IDM_OBJECTIVE_DEFAULTS: dict[str, dict[str, Any]] = {
    "hdd": {"curvature_k": 2.4, "weight": 100.0},  # IDM-HDD CIFAR-10 command
}


def resolve_method(method: str) -> dict[str, Any]:
    """Settings for ``method``: keys of :class:`~distillset.engine.distiller.DistillConfig`."""
    name = method.strip().lower()
    base, _, objective = name.partition("+")
    if base == "idm":
        objective = objective or "dm"
        settings = dict(IDM_SETTINGS)
        params = IDM_OBJECTIVE_DEFAULTS.get(objective, OBJECTIVE_DEFAULTS.get(objective, {}))
    elif not objective:
        objective, settings = base, {}
        params = OBJECTIVE_DEFAULTS.get(objective, {})
    else:
        raise UnknownNameError(f"unknown method '{method}'; combine only 'idm+<objective>', e.g. idm+hdd")
    if objective not in objective_names():
        raise UnknownNameError(
            f"unknown method '{method}'; choose one of: {', '.join(method_names())}"
        )
    return {**settings, "objective": objective, "objective_params": dict(params)}


def method_names() -> list[str]:
    objectives = objective_names()
    return objectives + ["idm"] + [f"idm+{name}" for name in objectives if name != "dm"]
