"""The distillation engine: one loop for every distribution-matching objective."""

from dataclasses import asdict, fields
from typing import Any

from distillset.engine.distiller import CheckpointMismatchError, DistillConfig, Distiller, run_together
from distillset.engine.methods import method_names, resolve_method
from distillset.engine.networks import QueueConfig


def config_for_method(method: str, **overrides: Any) -> DistillConfig:
    """A :class:`DistillConfig` for a method preset (``dm``, ``hdd``, ``idm``, ``idm+hdd``, ...); ``overrides``
    win, and ``objective_params`` / ``queue`` (a dict or :class:`QueueConfig`) override field by field."""
    settings = resolve_method(method, overrides.get("ipc", DistillConfig.ipc))
    params = {**settings.pop("objective_params"), **overrides.pop("objective_params", {})}
    queue = overrides.pop("queue", {})
    queue = {**settings.pop("queue", {}), **(asdict(queue) if isinstance(queue, QueueConfig) else queue)}
    unknown = sorted(set(queue) - {f.name for f in fields(QueueConfig)})
    if unknown:
        raise ValueError(f"unknown queue setting {', '.join(unknown)}; the settings are: "
                         f"{', '.join(f.name for f in fields(QueueConfig))}")
    return DistillConfig(**{**settings, **overrides, "objective_params": params, "queue": QueueConfig(**queue)})


__all__ = [
    "CheckpointMismatchError",
    "DistillConfig",
    "Distiller",
    "QueueConfig",
    "config_for_method",
    "method_names",
    "resolve_method",
    "run_together",
]
