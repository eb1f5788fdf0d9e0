"""Method presets: a method name resolves to engine settings plus an objective.

``dm``/``hdd``/any registered objective name runs in the DM loop (fresh random network each iteration,
one SGD step on the loss summed over classes). ``idm`` and ``idm+<objective>`` run IDM's loop (queue of
partly trained networks, 2×2 partition-and-expansion, class-aware CE regulariser, one step per class), with
the image learning rate and CE weight of the reference CIFAR-10 command for the IPC.
"""

from __future__ import annotations

import math
from typing import Any

from distillset.objectives import objective_names
from distillset.registry import UnknownNameError

IDM_SETTINGS: dict[str, Any] = {
    "network_source": "queue",
    "expansion_factor": 2,
    "step_per_class": True,
}
# Per-IPC settings of the CIFAR-10 commands (uitrbn/IDM and Guang000/HDD IDM-HDD command.txt), keyed by the
# largest IPC they apply to: IPC 1, IPC <= 10, larger. ``idm+<objective>`` uses the IDM-HDD rows. The queue's
# accuracy window is the commands' eval_interval (the reference resets its accuracy meters there); IPC 1 also
# uses batch_real 5000 and a new queue net every 5 iterations.
IPC_1_QUEUE = {"batch_real": 5000, "queue": {"push_interval": 5, "accuracy_window": 100}}
IDM_PER_IPC: dict[str, list[tuple[float, dict[str, Any]]]] = {
    "idm": [(1, {"lr_img": 0.2, "ce_weight": 0.5, **IPC_1_QUEUE}),
            (10, {"lr_img": 0.2, "ce_weight": 0.5, "queue": {"accuracy_window": 100}}),
            (math.inf, {"lr_img": 0.2, "ce_weight": 0.1, "queue": {"accuracy_window": 500}})],
    "idm+": [(1, {"lr_img": 0.5, "ce_weight": 0.5, **IPC_1_QUEUE}),
             (10, {"lr_img": 1.0, "ce_weight": 0.5, "queue": {"accuracy_window": 100}}),
             (math.inf, {"lr_img": 0.2, "ce_weight": 0.1, "queue": {"accuracy_window": 500}})],
}
# The IDM+<objective> presets' own objective settings (an objective's defaults live in its __init__).
IDM_OBJECTIVE_PARAMS: dict[str, dict[str, Any]] = {
    "hdd": {"curvature_k": 2.4, "weight": 100.0},  # IDM-HDD CIFAR-10 command
}


def resolve_method(method: str, ipc: int = 10) -> dict[str, Any]:
    """Settings for ``method`` at ``ipc``: keys of :class:`~distillset.engine.distiller.DistillConfig`
    (``queue`` as the :class:`~distillset.engine.networks.QueueConfig` fields that differ from its defaults)."""
    name = method.strip().lower()
    base, _, objective = name.partition("+")
    if base == "idm":
        rows = IDM_PER_IPC["idm+" if objective else "idm"]
        objective = objective or "dm"
        settings = {**IDM_SETTINGS, **next(values for largest, values in rows if ipc <= largest)}
        params = IDM_OBJECTIVE_PARAMS.get(objective, {})
    elif not objective:
        objective, settings, params = base, {}, {}
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
