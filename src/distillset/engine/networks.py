"""Where the engine gets its embedding network each iteration.

* :class:`RandomNetworkSampler` (DM): a freshly initialised network per iteration, frozen.
* :class:`TrainedNetworkQueue` (IDM): a queue of networks partly trained on real data, refreshed
  as distillation goes (Zhao et al., CVPR 2023, Sec. 3.3).
* :class:`LockstepNetworks`: one of the above shared by runs stepped in lockstep (``run_together``).

A source draws from its own random stream (never the run's), so which networks a run sees does not depend
on its IPC, objective or initialisation, and runs in lockstep can share them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distillset.data.base import DatasetInfo, ImageSet
from distillset.nets import get_network
from distillset.nets.base import load_training_state, training_state
from distillset.runtime import compile_or_eager, precision_autocast

QUEUE_STREAM_OFFSET = 2**33  # IDM's queue draws from a generator seeded with seed + this


@dataclass
class SampledNetwork:
    net: nn.Module
    train_accuracy: float  # running training accuracy on real data in percent (0 for a random net)
    embed: Callable[[Tensor], Tensor] = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.embed is None:
            self.embed = self.net.embed


def reinitialize_(net: nn.Module, seed: int) -> nn.Module:
    """Re-draw ``net``'s parameters in place exactly as ``get_network(..., seed=seed)`` would build them
    (``StagedNetwork.reset_parameters`` under a seeded RNG; the global RNG is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        net.reset_parameters()
    return net


class RandomNetworkSampler:
    """A new randomly initialised network each iteration (seeded by the iteration number).

    With ``compile=True`` one network is kept, re-initialised in place each iteration (the same weights a
    fresh network would get) and its ``embed`` compiled once with ``torch.compile``.
    """

    def __init__(self, model: str, info: DatasetInfo, seed: int, device: torch.device, compile: bool = False) -> None:
        self.model, self.info, self.seed, self.device = model, info, seed, device
        self._net: nn.Module | None = None
        self._embed: Callable[[Tensor], Tensor] | None = None
        self.compile = compile

    def network_seed(self, iteration: int) -> int:
        return self.seed * 1_000_003 + iteration

    def sample(self, iteration: int) -> list[SampledNetwork]:
        if self.compile:
            if self._net is None:
                self._net = get_network(self.model, self.info.channels, self.info.num_classes,
                                        self.info.image_size).to(self.device)
                self._embed = compile_or_eager(self._net.embed)
            net = reinitialize_(self._net, self.network_seed(iteration))
        else:
            net = get_network(
                self.model, self.info.channels, self.info.num_classes, self.info.image_size,
                seed=self.network_seed(iteration),
            ).to(self.device)
        net.train()  # as the reference: train mode, parameters frozen
        for parameter in net.parameters():
            parameter.requires_grad_(False)
        return [SampledNetwork(net, 0.0, self._embed if self.compile else None)]

    def after_step(self, iteration: int, real: ImageSet) -> None:
        """Random networks are never trained."""

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Nothing to restore: networks are a function of (seed, iteration)."""


@dataclass(frozen=True)
class QueueConfig:
    """IDM's model queue (uitrbn/IDM flags in brackets; defaults are the reference's)."""

    capacity: int = 100  # most nets kept [net_num]
    initial: int = 3  # random nets before the first iteration
    push_interval: int = 30  # a new random net every this many iterations [net_generate_interval]
    match_nets: int = 1  # nets sampled for matching per iteration [train_net_num]
    train_nets: int = 2  # nets trained after each iteration [fetch_net_num]
    train_steps: int = 10  # SGD steps each [model_train_steps]
    train_batch: int = 256  # real images per step [trained_bs]
    lr: float = 0.01  # SGD lr, momentum 0.9, weight decay 5e-4 [lr_net, net_decay]
    # The train-accuracy meters that weight IDM's CE term are reset every this many iterations (the reference
    # resets them at each evaluation interval, eval_interval 100, or 500 at IPC 50); 0 never resets them.
    accuracy_window: int = 100

    def __post_init__(self) -> None:
        for name in ("capacity", "push_interval", "match_nets", "train_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"queue {name} must be >= 1, got {getattr(self, name)}")
        for name in ("initial", "train_nets", "train_steps", "accuracy_window"):
            if getattr(self, name) < 0:
                raise ValueError(f"queue {name} must be >= 0, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"queue lr must be > 0, got {self.lr}")


@dataclass
class _QueuedNet:
    net: nn.Module
    optimizer: torch.optim.SGD
    forward: Callable[[Tensor], Tensor]  # ``net`` itself, or its compiled forward (queue training)
    embed: Callable[[Tensor], Tensor]  # ``net.embed``, or its compiled version (matching)
    correct: int = 0
    seen: int = 0

    @property
    def accuracy(self) -> float:
        return 100.0 * self.correct / self.seen if self.seen else 0.0


class TrainedNetworkQueue:
    """IDM's model queue (:class:`QueueConfig`): up to ``capacity`` nets; a new random net every
    ``push_interval`` iterations; ``match_nets`` nets sampled for matching (eval mode); after each iteration
    ``train_nets`` random queue members take ``train_steps`` SGD steps on real batches of ``train_batch`` images.
    A sampled net's training accuracy counts the steps since its meter was last reset (every
    ``accuracy_window`` iterations).

    These training steps are most of an IDM iteration's cost. ``precision="bf16"`` runs them under bf16
    autocast (parameters and optimiser state stay fp32) and ``compile=True`` compiles each net's forward
    and embedding (one compilation serves every queue member: parameters are graph inputs); in a one-off
    timing on a 2-core AVX-512 CPU the two together made a training step about 2.3x faster than fp32 eager.
    """

    def __init__(
        self,
        model: str,
        info: DatasetInfo,
        seed: int,
        device: torch.device,
        config: QueueConfig | None = None,
        *,
        precision: str = "fp32",
        compile: bool = False,
    ) -> None:
        self.model, self.info, self.seed, self.device = model, info, seed, device
        self.config = config or QueueConfig()
        self.precision, self.compile = precision, compile
        self.created = 0
        self.generator = torch.Generator().manual_seed(seed + QUEUE_STREAM_OFFSET)  # sampling and training draws
        self.queue: list[_QueuedNet] = []
        for _ in range(self.config.initial):
            self._push()

    def _push(self) -> None:
        net = get_network(
            self.model, self.info.channels, self.info.num_classes, self.info.image_size,
            seed=self.seed * 1_000_003 + 500_000 + self.created,
        ).to(self.device)
        optimizer = torch.optim.SGD(net.parameters(), lr=self.config.lr, momentum=0.9, weight_decay=5e-4)
        if self.compile:
            forward, embed = compile_or_eager(net), compile_or_eager(net.embed)
        else:
            forward, embed = net, net.embed
        self.queue.append(_QueuedNet(net, optimizer, forward, embed))
        self.created += 1
        if len(self.queue) > self.config.capacity:
            self.queue.pop(0)

    def sample(self, iteration: int) -> list[SampledNetwork]:
        window = self.config.accuracy_window
        if window and iteration % window == 0 and iteration:  # the reference resets its meters here
            for member in self.queue:
                member.correct = member.seen = 0
        if iteration % self.config.push_interval == 0:  # as the reference, also at iteration 0 (4 nets to start)
            self._push()
        order = torch.randperm(len(self.queue), generator=self.generator)[: self.config.match_nets]
        sampled = []
        for index in order.tolist():
            member = self.queue[index]
            member.net.eval()
            for parameter in member.net.parameters():
                parameter.requires_grad_(False)
            sampled.append(SampledNetwork(member.net, member.accuracy, member.embed))
        return sampled

    def after_step(self, iteration: int, real: ImageSet) -> None:
        order = torch.randperm(len(self.queue), generator=self.generator)[: self.config.train_nets]
        for index in order.tolist():
            member = self.queue[index]
            member.net.train()
            for parameter in member.net.parameters():
                parameter.requires_grad_(True)
            for _ in range(self.config.train_steps):
                batch = torch.randint(len(real), (self.config.train_batch,), generator=self.generator)
                x, y = real.images[batch].to(self.device), real.labels[batch].to(self.device)
                with precision_autocast(self.device, self.precision):
                    logits = member.forward(x).float()
                loss = F.cross_entropy(logits, y)
                member.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                member.optimizer.step()
                member.correct += int((logits.argmax(1) == y).sum())
                member.seen += len(y)

    def state_dict(self) -> dict[str, torch.Tensor]:
        state: dict[str, torch.Tensor] = {"queue.created": torch.tensor(self.created),
                                          "queue.generator": self.generator.get_state()}
        for i, member in enumerate(self.queue):
            state.update(training_state(member.net, member.optimizer, prefix=f"queue.{i}."))
            state[f"queue.{i}.counts"] = torch.tensor([member.correct, member.seen])
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.queue, self.created = [], 0
        target = int(state["queue.created"])
        size = len({k.split(".")[1] for k in state if k.startswith("queue.") and k.endswith(".counts")})
        self.created = target - size
        for i in range(size):
            self._push()
            member = self.queue[-1]
            load_training_state(state, member.net, member.optimizer, prefix=f"queue.{i}.")
            member.correct, member.seen = (int(v) for v in state[f"queue.{i}.counts"])
        self.generator.set_state(state["queue.generator"])


class LockstepNetworks:
    """One network source shared by ``runs`` distillations stepped in lockstep (:func:`run_together`).

    An iteration's networks are sampled once for all runs; IDM's queue is trained once per iteration, when
    the last run has finished it, so every run matches with exactly the networks it would see alone. The
    queue needs its runs at the same iteration (checked: a run that falls out of step raises RuntimeError);
    fresh random networks depend on the iteration alone, so their runs may be at any iterations.
    """

    def __init__(self, source: RandomNetworkSampler | TrainedNetworkQueue, runs: int) -> None:
        self.source, self.runs = source, runs
        self.trains = isinstance(source, TrainedNetworkQueue)
        self._iteration: int | None = None
        self._sampled: list[SampledNetwork] = []
        self._finished = 0

    def sample(self, iteration: int) -> list[SampledNetwork]:
        if iteration != self._iteration:
            if self.trains and self._iteration is not None and self._finished != self.runs:
                raise RuntimeError(
                    f"runs sharing IDM's network queue fell out of lockstep: iteration {iteration} was sampled "
                    f"while only {self._finished} of {self.runs} runs had finished iteration {self._iteration}"
                )
            self._iteration, self._sampled, self._finished = iteration, self.source.sample(iteration), 0
        return self._sampled

    def after_step(self, iteration: int, real: ImageSet) -> None:
        self._finished += 1
        if self._finished == self.runs:
            self.source.after_step(iteration, real)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.source.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.source.load_state_dict(state)
