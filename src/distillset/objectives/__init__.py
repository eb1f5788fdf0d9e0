"""Matching objectives: one file per loss, each registered in :data:`OBJECTIVES`.

Every module in this package is imported on first use, so adding a method is one file
with an ``@OBJECTIVES.register("name")`` class.
"""

from __future__ import annotations

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
    """Build the registered objective ``name`` with its hyperparameters."""
    _load_all()
    return OBJECTIVES.get(name)(**params)


def objective_names() -> list[str]:
    _load_all()
    return OBJECTIVES.names()


__all__ = ["OBJECTIVES", "MatchingContext", "MatchingObjective", "get_objective", "objective_names"]
