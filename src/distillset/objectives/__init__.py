"""Matching objectives: one file per loss, each registered in :data:`OBJECTIVES`.

Every module in this package is imported on first use, so adding a method is one file
with an ``@OBJECTIVES.register("name")`` class.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import Any

from distillset.objectives.base import MatchingContext, MatchingObjective
from distillset.registry import Registry

OBJECTIVES: Registry[type[MatchingObjective]] = Registry("objective")
_loaded = False


def _load_all() -> None:
    global _loaded
    if not _loaded:
        for module in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{module.name}")
        _loaded = True


def get_objective(name: str, **params: Any) -> MatchingObjective:
    """Build the registered objective ``name`` with its hyperparameters (ValueError names the accepted ones
    when ``params`` holds another)."""
    _load_all()
    objective_class = OBJECTIVES.get(name)
    objective_class.check_params(params)
    return objective_class(**params)


def objective_params(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """Every hyperparameter of objective ``name`` given ``params`` (validated, defaults filled, typed), as the
    plain values a manifest records; ``get_objective(name, **result)`` builds the same objective."""
    return dataclasses.asdict(get_objective(name, **params).config())


def objective_names() -> list[str]:
    _load_all()
    return OBJECTIVES.names()


__all__ = ["OBJECTIVES", "MatchingContext", "MatchingObjective", "get_objective", "objective_names", "objective_params"]
