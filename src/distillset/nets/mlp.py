"""The small MLP of DC's ``networks.MLP``: flatten -> 128 -> 128 -> classes, ReLU."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from math import prod

from torch import nn

from distillset.nets.base import StagedNetwork


class MLP(StagedNetwork):
    """Two hidden ReLU layers on the flattened image; ``embed`` is the second hidden layer.

    State-dict keys: ``hidden.{0,1}.linear.*`` and ``classifier.*``.
    """

    def __init__(
        self, channels: int, num_classes: int, image_size: tuple[int, int], *, hidden_width: int = 128
    ) -> None:
        super().__init__()
        in_features = channels * prod(image_size)
        self.hidden = nn.Sequential(
            *(
                nn.Sequential(
                    OrderedDict(flatten=nn.Flatten(), linear=nn.Linear(width_in, hidden_width), act=nn.ReLU())
                )
                for width_in in (in_features, hidden_width)
            )
        )
        self.classifier = nn.Linear(hidden_width, num_classes)

    @property
    def stages(self) -> Sequence[nn.Module]:
        return self.hidden
