"""The distillation engine: one loop for every distribution-matching objective."""

from distillset.engine.distiller import CheckpointMismatchError, DistillConfig, Distiller, run_together
from distillset.engine.methods import method_names, resolve_method


def config_for_method(method: str, **overrides) -> DistillConfig:
    """A :class:`DistillConfig` for a method preset (``dm``, ``hdd``, ``idm``, ``idm+hdd``, ...)."""
    settings = resolve_method(method, overrides.get("ipc", DistillConfig.ipc))
    params = {**settings.pop("objective_params"), **overrides.pop("objective_params", {})}
    return DistillConfig(**{**settings, **overrides, "objective_params": params})


__all__ = [
    "CheckpointMismatchError",
    "DistillConfig",
    "Distiller",
    "config_for_method",
    "method_names",
    "resolve_method",
    "run_together",
]
