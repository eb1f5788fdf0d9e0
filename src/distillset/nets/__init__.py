"""Networks used to embed, distil and evaluate: ConvNet-D, ResNet-18, ResNetAP-10, MLP.

Every network is a :class:`StagedNetwork` with ``embed(x)`` (the classifier input),
``features(x, upto)`` / ``logits_from(h, upto)`` (split after any stage) and ``forward``.
Build one by name with :func:`get_network`; see docs/networks.md for the list.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Protocol

import torch

from distillset.nets.base import StagedNetwork
from distillset.nets.convnet import ConvNet
from distillset.nets.layers import InstanceNorm2d, PatchConv2d, instance_norm, unfolded_conv2d
from distillset.nets.mlp import MLP
from distillset.nets.resnet import ResNet, resnet18, resnet_ap10
from distillset.registry import Registry


class NetworkBuilder(Protocol):
    def __call__(
        self, channels: int, num_classes: int, image_size: tuple[int, int], **options: Any
    ) -> StagedNetwork: ...


NETWORKS: Registry[NetworkBuilder] = Registry("network")

for _depth in (3, 4, 5, 6):
    NETWORKS.register(f"convnet{_depth}", aliases=("convnet",) if _depth == 3 else ())(partial(ConvNet, depth=_depth))
NETWORKS.register("convnet3-bn", aliases=("convnet-bn",))(partial(ConvNet, depth=3, norm="batchnorm"))
NETWORKS.register("resnet18", aliases=("resnet18-bn",))(resnet18)
NETWORKS.register("resnet18-in")(partial(resnet18, norm="instancenorm"))
NETWORKS.register("resnetap10")(resnet_ap10)
NETWORKS.register("mlp")(MLP)


def get_network(
    name: str,
    channels: int,
    num_classes: int,
    image_size: tuple[int, int] | int,
    *,
    seed: int | None = None,
    **options: Any,
) -> StagedNetwork:
    """Build the registered network ``name`` for ``channels`` x ``image_size`` inputs.

    ``options`` go to the constructor (e.g. ``width=512``, ``norm='batchnorm'``). With a
    ``seed`` the weights are drawn from a CPU RNG seeded with it inside ``fork_rng``, so the
    result is reproducible and the global RNG is left as it was; without one, PyTorch's
    default initialisation consumes the global RNG as usual.
    """
    builder = NETWORKS.get(name)
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2:
        raise ValueError(f"image_size must be an int or (height, width), got {image_size!r}")
    if seed is None:
        return builder(channels, num_classes, size, **options)
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        return builder(channels, num_classes, size, **options)


def network_names() -> list[str]:
    """Registered network names, aliases included."""
    return NETWORKS.names()


__all__ = [
    "MLP",
    "NETWORKS",
    "ConvNet",
    "InstanceNorm2d",
    "PatchConv2d",
    "ResNet",
    "StagedNetwork",
    "get_network",
    "instance_norm",
    "network_names",
    "resnet18",
    "resnet_ap10",
    "unfolded_conv2d",
]
