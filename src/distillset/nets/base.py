"""The interface every network shares: stages -> pooled embedding -> linear classifier."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn


def training_state(net: nn.Module, optimizer: torch.optim.Optimizer, prefix: str = "") -> dict[str, Tensor]:
    """A network in training as flat tensors (e.g. for a safetensors checkpoint): ``{prefix}net.<key>`` for
    its state dict and ``{prefix}momentum.<i>`` for the SGD momentum of its i-th parameter, where it has one."""
    state = {f"{prefix}net.{key}": value for key, value in net.state_dict().items()}
    for index, parameter in enumerate(net.parameters()):
        buffer = optimizer.state.get(parameter, {}).get("momentum_buffer")
        if buffer is not None:
            state[f"{prefix}momentum.{index}"] = buffer
    return state


def load_training_state(state: Mapping[str, Tensor], net: nn.Module, optimizer: torch.optim.Optimizer,
                        prefix: str = "") -> None:
    """Restore what :func:`training_state` saved (other keys in ``state`` are ignored)."""
    net_prefix = f"{prefix}net."
    net.load_state_dict({key[len(net_prefix):]: value for key, value in state.items() if key.startswith(net_prefix)})
    for index, parameter in enumerate(net.parameters()):
        buffer = state.get(f"{prefix}momentum.{index}")
        if buffer is not None:
            optimizer.state[parameter]["momentum_buffer"] = buffer.to(parameter.device).clone()


class StagedNetwork(nn.Module):
    """A network split into an ordered list of stages, a pooling step and a linear head.

    ``forward(x) = classifier(embed(x))`` and ``embed(x) = pool(stages[-1](...stages[0](x)))``,
    the classifier input that DM matches (dm_protocol.md section 1). ``features`` and
    ``logits_from`` split the network after any stage, as ELF does (elf.md section 2):
    ``logits_from(features(x, k), k) == forward(x)`` for every k.
    """

    classifier: nn.Linear

    @property
    def stages(self) -> Sequence[nn.Module]:
        """The blocks in order; the split points of :meth:`features`."""
        raise NotImplementedError

    def pool(self, h: Tensor) -> Tensor:
        """Map the last stage's activation to the flat embedding (default: flatten)."""
        return h.flatten(1)

    @property
    def embed_dim(self) -> int:
        """Length of :meth:`embed`'s output (the classifier's input size)."""
        return self.classifier.in_features

    def _stage_index(self, upto: int) -> int:
        count = len(self.stages)
        if not -count <= upto < count:
            raise IndexError(f"{type(self).__name__} has {count} stages (0..{count - 1}); got upto={upto}")
        return upto % count

    def features(self, x: Tensor, upto: int) -> Tensor:
        """Activation after stage ``upto`` (0-based; negative counts from the end)."""
        last = self._stage_index(upto)
        for stage in self.stages[: last + 1]:
            x = stage(x)
        return x

    def logits_from(self, h: Tensor, upto: int) -> Tensor:
        """Logits from ``h = features(x, upto)``: the remaining stages, pooling and classifier."""
        for stage in self.stages[self._stage_index(upto) + 1 :]:
            h = stage(h)
        return self.classifier(self.pool(h))

    def embed(self, x: Tensor) -> Tensor:
        """Flat features that feed the classifier."""
        for stage in self.stages:
            x = stage(x)
        return self.pool(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.embed(x))

    def reset_parameters(self) -> None:
        """Re-draw every parameter (and buffer) as construction did, consuming the RNG in the same order.

        Inside ``fork_rng`` with the CPU generator seeded as :func:`~distillset.nets.get_network`
        seeds it, this reproduces ``get_network(..., seed=seed)`` in place (e.g. to reuse a
        compiled network with fresh weights).
        """
        for module in self.modules():
            if module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters()
