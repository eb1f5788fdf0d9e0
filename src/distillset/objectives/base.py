"""The interface every matching loss implements; the engine only talks to this."""

from __future__ import annotations

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

    def config(self) -> dict[str, Any]:
        """Hyperparameters, recorded in artifacts' manifests."""
        return {}
