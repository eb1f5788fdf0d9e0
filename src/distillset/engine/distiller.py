"""The distillation loop shared by every distribution-matching method.

Per iteration: get embedding network(s) (fresh random, or IDM's queue), draw real batches per class,
apply the same DSA draw to a class's real and synthetic images, embed both, ask the objective for a loss,
take an SGD step on the synthetic pixels. Classes are independent: ``classes`` may be any shard.

:func:`run_together` runs several distillations of the same real data in lockstep; the real batches, DSA
draws and networks of an iteration are the same for all of them, so the networks (IDM: the queue's training)
and the real-feature pass, most of a step, are computed once and each run's result is exactly what it would
be alone.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import Tensor
from tqdm.auto import tqdm

from distillset.augment import DSA, DSAParams
from distillset.data.base import DatasetInfo, ImageSet
from distillset.engine.debias import check_debias, real_sample_weights
from distillset.engine.distributed import RankGroup, check_shardable
from distillset.engine.networks import (
    LockstepNetworks,
    QueueConfig,
    RandomNetworkSampler,
    SampledNetwork,
    TrainedNetworkQueue,
)
from distillset.engine.synthetic import expand, expanded_labels, pack
from distillset.io import CheckpointMismatchError, RunDir, atomic_save_tensors
from distillset.objectives import MatchingContext, get_objective, objective_params
from distillset.runtime import check_precision, default_compile, precision_autocast, resolve_precision

# The objective's generator is seeded with seed + this, apart from the stream of real batches and DSA draws.
OBJECTIVE_STREAM_OFFSET = 2**32
# Images per no-grad real forward pass. 256 keeps a chunk's activations (the first block's output: 256 x 128 x 32 x
# 32 bf16 = 67 MB) near the caches: the DM step (Fashion-MNIST IPC 10, 2 threads) took 1.05 s against 1.16 s with
# 1024-image chunks, and the features are bitwise the same (docs/methods.md). It also bounds peak memory.
REAL_CHUNK = 256
LR_SCHEDULES = ("constant", "cosine")


@dataclass
class DistillConfig:
    """Everything that defines a distillation run (recorded in checkpoints and manifests)."""

    objective: str = "dm"
    objective_params: dict[str, Any] = field(default_factory=dict)
    ipc: int = 10
    iterations: int = 2000
    lr_img: float = 1.0
    # "constant" (DM) | "cosine": lr_img * (1 + cos(pi t / iterations)) / 2 at iteration t, decayed to 0 at the end
    lr_schedule: str = "constant"
    momentum: float = 0.5
    batch_real: int = 256
    init: str = "real"  # "real" | "noise"
    model: str = "convnet3"
    dsa_strategy: str = "color_crop_cutout_flip_scale_rotate"
    network_source: str = "random"  # "random" (DM) | "queue" (IDM)
    expansion_factor: int = 1
    ce_weight: float = 0.0  # IDM class-aware CE regulariser, scaled by the net's train accuracy (%)
    queue: QueueConfig = field(default_factory=QueueConfig)  # IDM's model queue (network_source "queue")
    step_per_class: bool = False
    classes: list[int] | None = None
    seed: int = 0
    # "auto" | "fp32" | "bf16" for the (no-grad) real feature pass and IDM's queue training; "auto" is bf16 where the
    # hardware has native bf16 (distillset.runtime), resolved by Distiller. The synthetic images stay fp32.
    real_precision: str = "auto"
    # torch.compile the embedding (DM) or the queue nets' training forward (IDM); eager where compilation fails
    compile: bool = field(default_factory=default_compile)
    checkpoint_every: int = 100
    checkpoint_seconds: float = 600.0  # also checkpoint once this long has passed (slow runs, e.g. IDM on a CPU)
    log_every: int = 10
    # Re-weighting of biased real data (distillset.engine.debias; docs/biased.md): "none" | "kde", and its settings
    debias: str = "none"
    debias_params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Typed and complete: unknown names fail here, defaults are filled in, and what the manifest records
        # rebuilds this config (``DistillConfig(**manifest["config"])``).
        self.objective_params = objective_params(self.objective, self.objective_params)
        if isinstance(self.queue, dict):
            self.queue = QueueConfig(**self.queue)
        if self.ipc < 1:
            raise ValueError(f"ipc must be >= 1, got {self.ipc}")
        if self.iterations < 0:
            raise ValueError(f"iterations must be >= 0, got {self.iterations}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if self.init not in ("real", "noise"):
            raise ValueError(f"init must be 'real' or 'noise', got {self.init!r}")
        if self.network_source not in ("random", "queue"):
            raise ValueError(f"network_source must be 'random' or 'queue', got {self.network_source!r}")
        check_precision(self.real_precision)
        if self.expansion_factor < 1:
            raise ValueError(f"expansion_factor must be >= 1, got {self.expansion_factor}")
        check_debias(self.debias, self.debias_params)

    @property
    def method_label(self) -> str:
        """The method preset's name for progress and log lines (``dm``, ``hdd``, ``idm``, ``idm+hdd``, ...)."""
        if self.network_source != "queue":
            return self.objective
        return "idm" if self.objective == "dm" else f"idm+{self.objective}"

    def identity(self) -> dict[str, Any]:
        """Settings that must agree between a checkpoint and a resumed run (``iterations`` too under a decaying
        learning rate, whose schedule it sets)."""
        keep = ("checkpoint_every", "checkpoint_seconds", "log_every", "compile")
        keep += ("iterations",) if self.lr_schedule == "constant" else ()
        return {k: v for k, v in asdict(self).items() if k not in keep}

    def learning_rate(self, iteration: int) -> float:
        """The image learning rate of ``iteration`` under ``lr_schedule``."""
        if self.lr_schedule == "constant" or self.iterations == 0:
            return self.lr_img
        return self.lr_img * 0.5 * (1.0 + math.cos(math.pi * iteration / self.iterations))


class Distiller:
    """Learns a synthetic set for ``real`` with the configured objective.

    ``out_dir`` (optional) receives ``checkpoint.safetensors`` every ``checkpoint_every`` iterations
    and on Ctrl-C, and ``log.jsonl``. ``evaluate_every``/``evaluate`` add periodic evaluation.
    """

    def __init__(
        self,
        real: ImageSet,
        info: DatasetInfo,
        config: DistillConfig,
        *,
        out_dir: str | Path | None = None,
        device: str | torch.device = "cpu",
        progress: bool = False,
        evaluate: Callable[[ImageSet], dict[str, float]] | None = None,
        evaluate_every: int = 0,
        group: RankGroup | None = None,
        cache_real: bool = True,
    ) -> None:
        self.device = torch.device(device)
        config = replace(config, real_precision=resolve_precision(config.real_precision, self.device))  # as it runs
        self.real, self.info, self.config = real, info, config
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.progress, self.evaluate, self.evaluate_every = progress, evaluate, evaluate_every
        self.classes = list(config.classes) if config.classes is not None else list(range(info.num_classes))
        bad = [c for c in self.classes if not 0 <= c < info.num_classes]
        if bad:
            raise ValueError(f"classes {bad} out of range for {info.num_classes} classes of '{info.name}'")
        # moved once and batches gathered on the device, or (cache_real=False, e.g. memory-mapped images) each
        # batch gathered where the images are and moved
        self.real_images = real.images.to(self.device) if cache_real else real.images
        self.class_sizes = real.class_counts(info.num_classes)
        empty = [c for c in self.classes if int(self.class_sizes[c]) == 0]
        if empty:
            raise ValueError(f"classes {empty} have no real training images; cannot distil them")
        # Under torchrun (``group``) this process learns the pixels of its block of classes only, drawing the
        # whole run's random stream so they match one process (distillset.engine.distributed).
        self.group = group
        if group is not None:
            check_shardable(config.objective, config.objective_params, step_per_class=config.step_per_class,
                            ce_weight=config.ce_weight)
        self.owned = group.shard(self.classes) if group is not None else list(self.classes)
        self.objective = get_objective(config.objective, **config.objective_params)
        self.dsa = DSA(config.dsa_strategy) if config.dsa_strategy not in ("", "none") else None
        self.generator = torch.Generator().manual_seed(config.seed)
        self.objective_generator = torch.Generator().manual_seed(config.seed + OBJECTIVE_STREAM_OFFSET)
        self.real_pass_cache: RealPassCache | None = None  # set by run_together
        self.sampler: RandomNetworkSampler | TrainedNetworkQueue | LockstepNetworks = self._make_sampler()
        # debias: per-image probabilities of the real draws (initial images and batches); None draws uniformly
        self.real_weights = real_sample_weights(real, info, config.debias, config.debias_params, model=config.model,
                                                seed=config.seed, device=self.device, precision=config.real_precision)
        self.stored = self._initial_images()
        self.optimizer = torch.optim.SGD([self.stored], lr=config.lr_img, momentum=config.momentum)
        self.iteration = 0
        self.elapsed = 0.0
        self._last_checkpoint = time.perf_counter()

    # ----------------------------------------------------------------- set-up
    def _make_sampler(self) -> RandomNetworkSampler | TrainedNetworkQueue:
        c = self.config
        if c.network_source == "queue":
            return TrainedNetworkQueue(c.model, self.info, c.seed, self.device, c.queue, precision=c.real_precision,
                                       compile=c.compile)
        return RandomNetworkSampler(c.model, self.info, c.seed, self.device, compile=c.compile)

    def _initial_images(self) -> Tensor:
        c, f = self.config, self.config.expansion_factor
        shape = (len(self.classes) * c.ipc, self.info.channels, *self.info.image_size)
        if c.init == "noise":
            stored = self._own_rows(torch.randn(shape, generator=self.generator))
        else:
            per_class = []
            for cls in self.classes:  # every class's draw, so a shard's images are those of one process
                members = self.real.class_indices(cls)
                draw = c.ipc * f * f
                picks = members[torch.randperm(len(members), generator=self.generator)[:draw]
                                if self.real_weights is None else self._weighted(members, draw, replacement=False)]
                if len(picks) < draw:  # tiny tail classes: reuse images
                    picks = members[torch.randint(len(members), (draw,), generator=self.generator)]
                if cls in self.owned:
                    per_class.append(pack(self.real.images[picks], f))
            stored = torch.cat(per_class)
        return stored.to(self.device).requires_grad_(True)

    def _own_rows(self, rows: Tensor) -> Tensor:
        """This rank's block of a tensor of ``ipc`` rows per class of the run (all of it in one process)."""
        start = self.classes.index(self.owned[0]) * self.config.ipc
        return rows[start : start + len(self.owned) * self.config.ipc]

    def _all_rows(self, rows: Tensor) -> Tensor:
        """Every rank's rows of a per-class tensor (stored pixels, momentum), in class order."""
        if self.group is None:
            return rows
        ipc = self.config.ipc
        return self.group.all_gather_rows(rows, [len(self.group.block(self.classes, r)) * ipc
                                                 for r in range(self.group.world_size)])

    @property
    def is_writer(self) -> bool:
        """Whether this process writes the run's files (always, except on ranks other than 0 of torchrun)."""
        return self.group is None or self.group.is_writer

    @property
    def synthetic_labels(self) -> Tensor:
        return torch.tensor(self.classes).repeat_interleave(self.config.ipc)

    def synthetic_set(self) -> ImageSet:
        """The current synthetic training set (expanded for IDM), on the CPU; every rank's classes under torchrun."""
        f = self.config.expansion_factor
        with torch.no_grad():
            images = expand(self._all_rows(self.stored.detach()), f).cpu().clone()
        return ImageSet(images, expanded_labels(self.synthetic_labels, f))

    # ------------------------------------------------------------- one step
    def _real_picks(self, cls: int) -> Tensor:
        members = self.real.class_indices(cls)
        if self.real_weights is not None:
            return members[self._weighted(members, self.config.batch_real, replacement=True)]
        return members[torch.randperm(len(members), generator=self.generator)[: self.config.batch_real]]

    def _weighted(self, members: Tensor, count: int, *, replacement: bool) -> Tensor:
        """Positions in ``members`` drawn with probability proportional to their debias weights."""
        count = count if replacement else min(count, len(members))
        return torch.multinomial(self.real_weights[members], count, replacement, generator=self.generator)

    def _real_pass(self, sampled: SampledNetwork, classes: Sequence[int]) -> RealPass:
        """Draw each class's real batch and DSA parameters (in the reference's order) and embed the batches
        without gradients; taken from ``real_pass_cache`` when a run in lockstep already did this draw."""
        cache = self.real_pass_cache
        key = self._real_pass_key(sampled, classes) if cache is not None else None
        cached = cache.get(key) if cache is not None else None
        if cached is not None:
            self.generator.set_state(cached.generator_after)
            return cached
        real_aug, dsa_params, owned = [], [], []
        for cls in classes:  # all of them drawn; embedded where this rank owns the class
            picks = self._real_picks(cls)
            params = self.dsa.sample(1, self.generator, siamese=True) if self.dsa is not None else None
            if cls not in self.owned:
                continue
            real = self.real_images[picks].to(self.device)
            real_aug.append(self.dsa.apply(real, params) if params is not None else real)
            dsa_params.append(params)
            owned.append(cls)
        features: list[Tensor] = []
        if owned:
            with torch.no_grad(), precision_autocast(self.device, self.config.real_precision):
                embedded = torch.cat([sampled.embed(chunk).float() for chunk in torch.cat(real_aug).split(REAL_CHUNK)])
            features = list(embedded.split([len(r) for r in real_aug]))
        result = RealPass(features, dsa_params, self.generator.get_state(), classes=owned)
        if cache is not None:
            cache.put(key, result)
        return result

    def _real_pass_key(self, sampled: SampledNetwork, classes: Sequence[int]) -> tuple[Hashable, ...]:
        """What determines this step's real pass besides the settings :func:`run_together` checks: the
        iteration and network (shared in lockstep), the classes and the generator state before the draws."""
        state = self.generator.get_state()
        return (self.iteration, id(sampled.net), tuple(classes), state.numpy().tobytes())

    def _embed_classes(self, sampled: SampledNetwork, classes: Sequence[int]) -> tuple[RealPass, Tensor]:
        """The real pass (features per class), and the synthetic features of the ``classes`` this process owns
        (``real.classes``) in class order (one forward pass each; ``ipc * expansion_factor**2`` synthetic images
        per class)."""
        c = self.config
        real = self._real_pass(sampled, classes)
        positions = [self.owned.index(cls) for cls in real.classes]
        stored = torch.cat([self.stored[p * c.ipc : (p + 1) * c.ipc] for p in positions])
        per_class_syn = expand(stored, c.expansion_factor).split(c.ipc * c.expansion_factor**2)
        syn_aug = [
            self.dsa.apply(syn, params) if params is not None else syn
            for syn, params in zip(per_class_syn, real.dsa_params, strict=True)
        ]
        return real, sampled.embed(torch.cat(syn_aug))

    def _loss(self, sampled: SampledNetwork, classes: Sequence[int], context: MatchingContext) -> Tensor | None:
        """The step's loss over the ``classes`` this process owns; None (after the random draws) if none."""
        per_class = self.config.ipc * self.config.expansion_factor**2
        if not any(cls in self.owned for cls in classes):
            self._real_pass(sampled, classes)
            return None
        real, syn_features = self._embed_classes(sampled, classes)
        classes = real.classes
        context = replace(context, real_derived=real.derived)  # the same log dict; this pass's derived values
        loss = self.objective.loss(list(real.features), list(syn_features.split(per_class)), classes, context)
        if self.config.ce_weight > 0:
            labels = torch.tensor(classes, device=self.device).repeat_interleave(per_class)
            # the network's logits are classifier(embed(x)): reuse the matched features (IDM's syn-CE term)
            ce = F.cross_entropy(sampled.net.classifier(syn_features), labels)
            loss = loss + self.config.ce_weight * sampled.train_accuracy * ce
        return loss

    def _apply(self, loss: Tensor | None) -> float:
        if loss is None:  # another rank's classes: a zero gradient here, as in one process; momentum still moves
            self.stored.grad = torch.zeros_like(self.stored)
            self.optimizer.step()
            return 0.0
        value = float(loss.detach())
        if not math.isfinite(value):
            where = f" (last good checkpoint: {RunDir(self.out_dir).checkpoint})" if self.out_dir else ""
            raise FloatingPointError(
                f"loss is {value} at iteration {self.iteration}{where}. Lower --lr-img or the objective's "
                "weight, or check the real data for NaN values."
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return value

    def step(self) -> dict[str, float]:
        """One distillation iteration; returns the values to log."""
        c = self.config
        context = MatchingContext(
            iteration=self.iteration, total_iterations=c.iterations, num_classes=self.info.num_classes,
            class_sizes=self.class_sizes, generator=self.objective_generator,
        )
        total = 0.0
        for param_group in self.optimizer.param_groups:
            param_group["lr"] = c.learning_rate(self.iteration)
        for sampled in self.sampler.sample(self.iteration):
            groups = [[cls] for cls in self.classes] if c.step_per_class else [self.classes]
            for group in groups:
                total += self._apply(self._loss(sampled, group, context))
        self.sampler.after_step(self.iteration, self.real)
        self.iteration += 1
        values = {"loss": total / len(self.classes), **context.log}
        if self.group is not None:  # the loss summed over ranks; diagnostics weighted by each rank's classes
            weight = len(self.owned) / len(self.classes)
            keys = sorted(values)
            summed = self.group.sum([values[k] if k == "loss" else weight * values[k] for k in keys])
            values = dict(zip(keys, summed, strict=True))
        return values

    # ------------------------------------------------------------ long runs
    def run(self, *, resume: bool = False) -> ImageSet:
        """Run to ``config.iterations``, checkpointing; returns the synthetic set.

        Ctrl-C (SIGINT) or SIGTERM finishes the current iteration, writes a checkpoint and stops (raising
        KeyboardInterrupt, or SystemExit(143) for SIGTERM), so ``resume=True`` continues bit-for-bit. A second
        signal stops at once; the checkpoint then still saves the pixels but may hold a half-done iteration."""
        return run_together([self], resume=resume)[0]

    def _advance(self) -> dict[str, float]:
        """One iteration with its bookkeeping: time, log line and periodic evaluation (:func:`run_together`
        checkpoints once every run of the group has finished the iteration)."""
        c = self.config
        start = time.perf_counter()
        values = self.step()
        self.elapsed += time.perf_counter() - start
        if self.iteration % c.log_every == 0 or self.iteration == c.iterations:
            self._log({"iteration": self.iteration, "seconds": round(self.elapsed, 3), **values})
        if self.evaluate is not None and self.evaluate_every and self.iteration % self.evaluate_every == 0:
            synthetic = self.synthetic_set()  # gathered by every rank; evaluated by the writer
            if self.is_writer:
                self._log({"iteration": self.iteration, **self.evaluate(synthetic)})
        return values

    @property
    def checkpoint_due(self) -> bool:
        """Every ``checkpoint_every`` iterations, or once ``checkpoint_seconds`` have passed since the last one
        (a killed job, which cannot save on the way out, then loses at most that much)."""
        every, seconds = self.config.checkpoint_every, self.config.checkpoint_seconds
        return (bool(every) and self.iteration % every == 0) or (
            seconds > 0 and time.perf_counter() - self._last_checkpoint >= seconds)

    def _log(self, record: dict[str, Any]) -> None:
        if self.out_dir is None or not self.is_writer:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open(RunDir(self.out_dir).log, "a") as handle:
            handle.write(json.dumps(record) + "\n")

    def _state(self) -> dict[str, Tensor]:
        state = {"stored": self._all_rows(self.stored.detach()), "generator": self.generator.get_state(),
                 "objective_generator": self.objective_generator.get_state()}
        momentum = self.optimizer.state.get(self.stored, {}).get("momentum_buffer")
        if momentum is not None:
            state["momentum"] = self._all_rows(momentum)
        state.update(self.sampler.state_dict())
        return state

    def save_checkpoint(self) -> None:
        """Atomically write the full state (pixels, momentum, RNG, network queue) to ``out_dir`` (under torchrun
        every rank gathers, rank 0 writes: the file is the one a single process writes)."""
        if self.out_dir is None:
            return
        state = self._state()
        if not self.is_writer:
            self._last_checkpoint = time.perf_counter()
            return
        metadata = {
            "iteration": str(self.iteration),
            "elapsed": repr(self.elapsed),
            "config": json.dumps(self.config.identity(), sort_keys=True, default=str),
        }
        atomic_save_tensors(RunDir(self.out_dir).checkpoint, state, metadata=metadata)
        self._last_checkpoint = time.perf_counter()

    def load_checkpoint(self) -> bool:
        """Restore the state saved in ``out_dir``; returns False when there is none. Under torchrun rank 0 reads
        it and sends it to the others, each keeping its classes' rows (any number of processes may resume)."""
        path = RunDir(self.out_dir).checkpoint if self.out_dir is not None else None
        if path is None:
            return False
        found = _read_checkpoint(path) if self.is_writer else None
        if self.group is not None:
            found = self.group.broadcast_object(found)
        if found is None:
            return False
        metadata, state = found
        saved = json.loads(metadata.get("config", "{}"))
        current = json.loads(json.dumps(self.config.identity(), sort_keys=True, default=str))
        if saved != current:
            diff = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
            raise CheckpointMismatchError(
                f"{path} was made with different settings ({', '.join(diff)}); resume with the same "
                "flags or write to a new --out directory"
            )
        with torch.no_grad():
            self.stored.copy_(self._own_rows(state["stored"]))
        if "momentum" in state:
            momentum = self._own_rows(state["momentum"]).to(self.device).clone()
            self.optimizer.state[self.stored]["momentum_buffer"] = momentum
        self.generator.set_state(state["generator"])
        if "objective_generator" in state:  # absent in checkpoints of older versions
            self.objective_generator.set_state(state["objective_generator"])
        self.sampler.load_state_dict({k: v for k, v in state.items() if k.startswith("queue.")})
        self.iteration = int(metadata["iteration"])
        self.elapsed = float(metadata.get("elapsed", "0"))
        return True


def _read_checkpoint(path: Path) -> tuple[dict[str, str], dict[str, Tensor]] | None:
    """A checkpoint's metadata and tensors, or None when there is none."""
    if not path.is_file():
        return None
    with safe_open(path, framework="pt") as handle:
        return handle.metadata() or {}, {key: handle.get_tensor(key) for key in handle.keys()}


@dataclass(frozen=True)
class RealPass:
    """One step's real side: per-class features (no grad), the DSA draw per class (replayed on the
    synthetic images) and the run generator's state after those draws; ``classes`` are the classes of the step
    whose features were computed (all of them in one process, the owned ones under torchrun)."""

    features: list[Tensor]
    dsa_params: list[DSAParams | None]
    generator_after: Tensor
    derived: dict[Hashable, Any] = field(default_factory=dict)  # objectives' MatchingContext.real_derived
    classes: list[int] = field(default_factory=list)


class RealPassCache:
    """The real passes of a lockstep group's latest iteration (one per class group: IDM steps class by
    class), reused by the group's other runs in the same iteration. Keys start with the iteration."""

    def __init__(self) -> None:
        self._entries: dict[tuple[Hashable, ...], RealPass] = {}

    def get(self, key: tuple[Hashable, ...]) -> RealPass | None:
        return self._entries.get(key)

    def put(self, key: tuple[Hashable, ...], value: RealPass) -> None:
        if any(existing[0] != key[0] for existing in self._entries):
            self._entries.clear()
        self._entries[key] = value


# Settings that decide a step's real pass besides the per-step key (network seed, classes, generator state).
SHARED_SETTINGS = ("model", "seed", "batch_real", "dsa_strategy", "real_precision", "compile", "classes",
                   "network_source", "queue", "debias", "debias_params")


def run_together(distillers: Sequence[Distiller], *, resume: bool = False) -> list[ImageSet]:
    """Run distillations in lockstep (iteration i of each, then i + 1, ...); returns their synthetic sets.

    Runs of one real set with the same network source (DM's random networks or IDM's queue), seed, real batch
    size, DSA, real precision and classes (objectives, IPC, expansion and learning rates may differ; for DM
    also iterations) draw the same real batches, DSA parameters and networks in every iteration, because
    objectives and network sources draw from their own generators and initialisation from real images draws
    one permutation per class whatever the IPC. The networks (with IDM's queue training) and the real-feature
    pass, most of a step, are then computed once per iteration and shared; a draw that differs (e.g. a tail
    class smaller than the IPC) is simply computed again, so each result is exactly the run's result alone
    (tested). Each run keeps its own checkpoints and log, written once the whole group has finished the
    iteration; a signal stops all of them after the current iteration, as :meth:`Distiller.run` does.
    """
    if not distillers:
        raise ValueError("run_together needs at least one Distiller")
    if len(distillers) > 1:
        share_real_pass(distillers)
    if resume:
        for distiller in distillers:
            distiller.load_checkpoint()
    _check_in_step(distillers)
    group = distillers[0].group  # under torchrun: checkpoints and stops are agreed, so every rank gathers
    names = ", ".join(d.config.method_label for d in distillers)
    bar = tqdm(total=sum(d.config.iterations for d in distillers), initial=sum(d.iteration for d in distillers),
               desc=f"distill {names}", disable=not any(d.progress for d in distillers))
    try:
        with _stop_signals_deferred() as stop:
            while active := [d for d in distillers if d.iteration < d.config.iterations]:
                for distiller in active:
                    values = distiller._advance()
                    bar.update(1)
                    bar.set_postfix(loss=f"{values['loss']:.4g}")
                due = [distiller.checkpoint_due for distiller in active] + [bool(stop)]
                if group is not None:
                    due = group.any(due)
                for distiller, save in zip(active, due, strict=False):
                    if save:
                        distiller.save_checkpoint()
                if due[-1]:
                    for distiller in distillers:
                        distiller.save_checkpoint()
                    if (stop[0] if stop else signal.SIGTERM) == signal.SIGTERM:
                        raise SystemExit(128 + signal.SIGTERM)
                    raise KeyboardInterrupt
    except KeyboardInterrupt:
        if group is None:  # under torchrun the agreed stop above saved; a second signal cannot gather
            for distiller in distillers:
                distiller.save_checkpoint()
        raise
    finally:
        bar.close()
        for distiller in distillers:
            distiller.real_pass_cache = None
    for distiller in distillers:
        distiller.save_checkpoint()
    return [distiller.synthetic_set() for distiller in distillers]


def share_real_pass(distillers: Sequence[Distiller]) -> None:
    """Make these distillers share their networks and one real pass per iteration when stepped in lockstep
    (as :func:`run_together` does); raises ValueError unless they can (same real set and settings)."""
    _check_shareable(distillers)
    cache = RealPassCache()
    networks = LockstepNetworks(distillers[0].sampler, len(distillers))
    for distiller in distillers:
        distiller.real_pass_cache = cache
        distiller.sampler = networks


def _label(distiller: Distiller) -> str:
    return distiller.out_dir.name if distiller.out_dir is not None else distiller.config.method_label


def _check_shareable(distillers: Sequence[Distiller]) -> None:
    first = distillers[0]
    for other in distillers[1:]:
        differing = [name for name in SHARED_SETTINGS if getattr(other.config, name) != getattr(first.config, name)]
        if other.real is not first.real:
            differing.append("real set (pass the same ImageSet object)")
        if other.device != first.device:
            differing.append("device")
        if differing:
            raise ValueError(
                f"run_together shares the real pass, so its runs must agree on {', '.join(SHARED_SETTINGS)} and "
                f"the real set; '{_label(other)}' differs from '{_label(first)}' in: {', '.join(differing)}. "
                "Run them separately."
            )
    counts = {d.config.iterations for d in distillers}
    if first.config.network_source == "queue" and len(counts) > 1:
        raise ValueError(f"runs sharing IDM's network queue must run the same number of iterations, got "
                         f"{sorted(counts)}; run them separately")


def _check_in_step(distillers: Sequence[Distiller]) -> None:
    """Runs sharing IDM's queue must start at the same iteration (e.g. resumed from checkpoints of one group)."""
    if len(distillers) < 2 or distillers[0].config.network_source != "queue":
        return
    at = {_label(d): d.iteration for d in distillers}
    if len(set(at.values())) > 1:
        raise ValueError(f"runs sharing IDM's network queue must start at the same iteration, but their "
                         f"checkpoints are at {at}; resume them separately or move the lagging checkpoints away")


@contextlib.contextmanager
def _stop_signals_deferred():
    """Record SIGINT/SIGTERM in the yielded list instead of stopping mid-iteration; the first signal restores
    the previous handlers, so a second one acts at once. Outside the main thread, nothing is changed."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    watched = (signal.SIGINT, signal.SIGTERM)
    previous = {signum: signal.getsignal(signum) for signum in watched}

    def restore() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    def record(signum: int, frame: object) -> None:
        received.append(signum)
        restore()

    for signum in watched:
        signal.signal(signum, record)
    try:
        yield received
    finally:
        restore()
