"""A tiny name -> object registry, in the spirit of timm's model registry, and the ``key=value`` parser
for the parameters of registered components (objectives, ELF settings)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """Raised when a registry is asked for a name it does not hold."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0])


def parse_key_values(items: Iterable[str]) -> dict[str, Any]:
    """``["k=v", ...]`` -> ``{"k": v}``: values parsed as JSON where possible (numbers, true/false), else kept
    as strings; ``-`` in keys becomes ``_``. Raises ValueError for an item without ``key=``."""
    params: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"expects key=value, got {item!r}")
        try:
            params[key.replace("-", "_")] = json.loads(raw)
        except json.JSONDecodeError:
            params[key.replace("-", "_")] = raw
    return params


class Registry(Generic[T]):
    """Maps names (case-insensitive, '_' and '-' equivalent) to objects."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    @staticmethod
    def _key(name: str) -> str:
        return name.strip().lower().replace("_", "-")

    def register(self, name: str, *, aliases: tuple[str, ...] = ()) -> Callable[[T], T]:
        """Decorator: ``@REGISTRY.register("dm")`` registers the decorated object."""

        def decorate(obj: T) -> T:
            for key in (name, *aliases):
                k = self._key(key)
                if k in self._entries and self._entries[k] is not obj:
                    raise ValueError(f"{self.kind} '{key}' is registered twice")
                self._entries[k] = obj
            return obj

        return decorate

    def get(self, name: str) -> T:
        try:
            return self._entries[self._key(name)]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} '{name}'; choose one of: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._key(name) in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
