"""The interface every matching loss implements; the engine only talks to this.

An objective's hyperparameters are the keyword arguments of its ``__init__`` (defaults there, in one place).
Like diffusers' ``ConfigMixin``, every construction records them, and :meth:`MatchingObjective.config_class`
turns the signatures along the class hierarchy into a typed dataclass: :meth:`MatchingObjective.config` is
an instance of it (written into manifests), and ``type(objective)(**asdict(objective.config()))`` rebuilds
the same objective.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from abc import ABC
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor


@dataclass
class MatchingContext:
    """What an objective may know about the current distillation step."""

    iteration: int
    total_iterations: int
    num_classes: int
    class_sizes: Tensor  # real training images per class, shape (num_classes,)
    generator: torch.Generator | None = None  # the objective's own random stream (the engine's real batches,
    # DSA draws and networks use another one, so objectives that draw numbers never shift those)
    log: dict[str, float] = field(default_factory=dict)  # objectives may add values to log
    # Values an objective derives from this step's real features alone (e.g. UniDD's real FFC), kept with the
    # engine's real pass: the runs of a lockstep group share one pass, so each such value is computed once per
    # group. Keys name the objective family and the settings the value depends on.
    real_derived: dict[Hashable, Any] = field(default_factory=dict)

    def derive_from_real(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """``real_derived[key]``, computed by ``compute()`` the first time (a pure function of the real features)."""
        if key not in self.real_derived:
            self.real_derived[key] = compute()
        return self.real_derived[key]


class MatchingObjective(ABC):
    """Compares embedded real and synthetic batches and returns a scalar loss.

    Subclasses implement :meth:`class_loss` (classes independent, as in DM) or override
    :meth:`loss` when the objective couples classes. ``real`` features are detached by the
    engine; gradients flow through ``synthetic`` only.
    """

    name: ClassVar[str] = ""
    _params: dict[str, Any]  # the constructor's arguments, defaults included (set by the recording __init__)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _recording_init(cls.__dict__["__init__"])  # type: ignore[method-assign]

    @classmethod
    def config_class(cls) -> type:
        """The typed configuration: a frozen dataclass with one field per ``__init__`` keyword argument of
        this class and its bases (annotation and default taken from the signature)."""
        return _config_class(cls)

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        """Raise ValueError naming the accepted parameters when ``params`` has a name ``__init__`` lacks."""
        names = [f.name for f in dataclasses.fields(cls.config_class())]
        unknown = sorted(set(params) - set(names))
        if unknown:
            accepted = ", ".join(names) or "none"
            raise ValueError(f"objective '{cls.name or cls.__name__}' has no parameter {', '.join(unknown)}; "
                             f"its parameters are: {accepted}")

    def config(self) -> Any:
        """This objective's hyperparameters as an instance of :meth:`config_class` (ints given for float
        fields become floats)."""
        config_class = self.config_class()
        hints = {f.name: f.type for f in dataclasses.fields(config_class)}
        return config_class(**{k: _coerce(hints[k], v) for k, v in getattr(self, "_params", {}).items()})

    @staticmethod
    def check_batches(real: Sequence[Tensor], synthetic: Sequence[Tensor], classes: Sequence[int]) -> None:
        """Raise unless there is one real and one synthetic feature batch for each of >= 1 classes."""
        if not (len(real) == len(synthetic) == len(classes)) or not classes:
            raise ValueError(
                f"need one real and one synthetic feature batch per class, got {len(real)} real, "
                f"{len(synthetic)} synthetic for {len(classes)} classes"
            )

    def loss(
        self,
        real: Sequence[Tensor],
        synthetic: Sequence[Tensor],
        classes: Sequence[int],
        context: MatchingContext,
    ) -> Tensor:
        """Sum of per-class losses over the classes of this step (one entry per class)."""
        self.check_batches(real, synthetic, classes)
        total = synthetic[0].new_zeros(())
        for r, s, c in zip(real, synthetic, classes, strict=True):
            total = total + self.class_loss(r, s, c, context)
        return total

    def class_loss(self, real: Tensor, synthetic: Tensor, class_index: int, context: MatchingContext) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement class_loss or loss")


def _recording_init(init: Callable[..., None]) -> Callable[..., None]:
    """Wrap ``__init__`` so the bound keyword arguments (defaults included) are kept in ``self._params``; a
    subclass's values win over the ones its base's ``__init__`` records when called through ``super()``."""
    signature = inspect.signature(init)

    @functools.wraps(init)
    def recording_init(self: MatchingObjective, *args: Any, **kwargs: Any) -> None:
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        values: dict[str, Any] = {}
        for name, value in list(bound.arguments.items())[1:]:
            kind = signature.parameters[name].kind
            if kind is inspect.Parameter.VAR_KEYWORD:
                values.update(value)
            elif kind is not inspect.Parameter.VAR_POSITIONAL:
                values[name] = value
        self._params = {**values, **getattr(self, "_params", {})}
        init(self, *args, **kwargs)

    return recording_init


@functools.cache
def _config_class(cls: type[MatchingObjective]) -> type:
    fields: dict[str, tuple[str, Any, Any]] = {}
    for klass in reversed(cls.__mro__):
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        original = inspect.unwrap(init)
        try:
            hints = typing.get_type_hints(original)
        except (NameError, TypeError):  # an annotation that does not evaluate here
            hints = {}
        for name, parameter in list(inspect.signature(original).parameters.items())[1:]:
            if parameter.kind in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL):
                continue
            default = dataclasses.MISSING if parameter.default is inspect.Parameter.empty else parameter.default
            fields[name] = (name, hints.get(name, Any), dataclasses.field(default=default))
    return dataclasses.make_dataclass(f"{cls.__name__}Config", list(fields.values()), frozen=True)


def _coerce(hint: Any, value: Any) -> Any:
    """An int given for a ``float`` (or ``float | ...``) field, as a float."""
    accepts_float = hint is float or float in typing.get_args(hint)
    if accepts_float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value
