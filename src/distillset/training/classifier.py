"""Classifier training: the optimiser, schedule and augmentation of the DC/DM evaluation protocol.

Defaults follow ``evaluate_synset`` of VICO-UoE/DatasetCondensation: SGD (momentum 0.9, weight decay 5e-4),
lr 0.01 multiplied by 0.1 with the optimiser re-created at epoch ``epochs // 2 + 1``, batch 256, the loop
runs ``epochs + 1`` epochs, every batch is augmented with non-siamese DSA, and the reported accuracy is the
final epoch's on the full test split (not the best epoch). Used by evaluation, coreset feature networks,
ELF's feature network and teachers.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from torch import Tensor, nn
from tqdm.auto import tqdm

from distillset.augment import DSA
from distillset.data.base import ImageSet
from distillset.io import ArtifactError, CheckpointMismatchError, atomic_save_tensors, atomic_write_json
from distillset.nets.base import load_training_state, training_state
from distillset.runtime import (
    check_precision,
    compile_failure,
    compile_or_eager,
    default_compile,
    precision_autocast,
    resolve_precision,
)

Precision = Literal["auto", "fp32", "bf16"]


@dataclass
class EvalConfig:
    """Hyperparameters of one evaluation (defaults = the paper protocol)."""

    model: str = "convnet3"
    epochs: int = 1000
    num_models: int = 5
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 256
    dsa: bool = True
    dsa_strategy: str = "color_crop_cutout_flip_scale_rotate"
    # The fastest correct settings by default (distillset.runtime): bf16 autocast where the hardware has native
    # bf16 (weights, optimiser state and norm statistics stay fp32; accuracy as fp32 in eval_speed.json), and a
    # compiled forward (train and test) that falls back to eager where torch.compile fails.
    precision: Precision = "auto"
    compile: bool = field(default_factory=default_compile)
    test_batch_size: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.num_models < 1 or self.batch_size < 1:
            raise ValueError(
                f"epochs must be >= 0, num_models >= 1 and batch_size >= 1 "
                f"(got {self.epochs}, {self.num_models}, {self.batch_size})"
            )
        check_precision(self.precision)

    def resolved(self, device: str | torch.device) -> EvalConfig:
        """This config as it runs on ``device``: ``auto`` precision resolved to fp32 or bf16, and ``compile``
        off once compilation has failed in this process (what evaluation results record)."""
        return replace(self, precision=resolve_precision(self.precision, device),
                       compile=self.compile and compile_failure() is None)


@dataclass
class ModelResult:
    accuracy: float  # percent, final epoch
    per_class: list[float]
    train_seconds: float


def training_identity(net: nn.Module, train: ImageSet, config: EvalConfig, generator: torch.Generator,
                      relabel: Relabel | None = None, variant: dict[str, Any] | None = None) -> str:
    """A digest of everything that determines a model's training: the settings (not ``num_models``), the
    training set, the network's initial weights, the generator's state before the first draw, the relabelling
    teacher, if any, and the settings of an evaluation ``variant`` (JSON-serialisable, e.g. ELF's)."""
    settings = {k: v for k, v in asdict(config).items() if k != "num_models"}
    if relabel is not None:
        settings["relabel"] = {"teacher": relabel.identity, "temperature": relabel.temperature}
    if variant is not None:
        settings["variant"] = variant
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    tensors = [train.images, train.labels, generator.get_state(), *net.state_dict().values()]
    if train.soft_labels is not None:
        tensors.append(train.soft_labels)
    for tensor in tensors:
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class TrainingCheckpoint:
    """Resumable training of one evaluation model (``<stem>.safetensors`` while it trains, ``<stem>.json`` once
    it is tested).

    :func:`train_classifier` writes the network, its momentum, the generator and the next epoch atomically at
    the end of an epoch, at most every ``every_seconds``; a later call with a checkpoint of the same
    ``identity`` (:func:`training_identity`) continues from there and ends with bit-for-bit the weights of an
    uninterrupted run. A checkpoint of another training raises :class:`CheckpointMismatchError`.
    """

    def __init__(self, stem: str | Path, identity: str, every_seconds: float = 120.0) -> None:
        self.path = Path(stem).with_suffix(".safetensors")
        self.result_path = Path(stem).with_suffix(".json")
        self.identity, self.every_seconds = identity, every_seconds
        self.earlier_seconds = 0.0  # training time of earlier processes, set by restore()
        self._last_save = time.perf_counter()

    def _check(self, saved_identity: str | None, path: Path) -> None:
        if saved_identity != self.identity:
            raise CheckpointMismatchError(
                f"{path} belongs to another training (different set, network or settings); delete it to "
                "train this model from the start"
            )

    def restore(self) -> tuple[int, dict[str, Tensor]] | None:
        """The next epoch and the saved tensors, or None when there is no checkpoint."""
        if not self.path.is_file():
            return None
        try:
            with safe_open(self.path, framework="pt") as handle:
                metadata = handle.metadata() or {}
                state = {key: handle.get_tensor(key) for key in handle.keys()}
        except (SafetensorError, OSError) as exc:
            raise ArtifactError(
                f"training checkpoint {self.path} is unreadable ({exc}); delete it to train this model from the start"
            ) from exc
        self._check(metadata.get("identity"), self.path)
        self.earlier_seconds = float(metadata["seconds"])
        return int(metadata["epoch"]), state

    def due(self) -> bool:
        return time.perf_counter() - self._last_save >= self.every_seconds

    def save(self, state: dict[str, Tensor], *, epoch: int, seconds: float) -> None:
        atomic_save_tensors(self.path, state, metadata={"epoch": str(epoch), "seconds": repr(seconds),
                                                        "identity": self.identity})
        self._last_save = time.perf_counter()

    def finished(self) -> ModelResult | None:
        """The tested model's result, if an earlier process got that far."""
        if not self.result_path.is_file():
            return None
        try:
            saved = json.loads(self.result_path.read_text())
        except (OSError, ValueError) as exc:
            raise ArtifactError(
                f"tested-model record {self.result_path} is unreadable ({exc}); delete it to train this model again"
            ) from exc
        self._check(saved.pop("identity", None), self.result_path)
        return ModelResult(**saved)

    def finish(self, result: ModelResult) -> None:
        """Keep the tested model's result and drop the training state."""
        atomic_write_json(self.result_path, {**asdict(result), "identity": self.identity})
        self.path.unlink(missing_ok=True)


def compiled(net: nn.Module, config: EvalConfig) -> Callable[[Tensor], Tensor]:
    """``net``'s forward, compiled when ``config.compile`` (static shapes: the last, smaller batch of an epoch
    and the test batches get their own graphs; eager where compilation fails). Build it once per network and
    pass it on."""
    return compile_or_eager(net, config.compile)


def soft_cross_entropy(logits: Tensor, target_probs: Tensor) -> Tensor:
    """Cross-entropy against target distributions (soft labels)."""
    return -(target_probs * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


@dataclass(frozen=True)
class Relabel:
    """FKD-style relabelling (SRe2L / RDED "relabel", FKD): every augmented training batch is labelled by a
    teacher, and the student fits those labels, cross-entropy(softmax(t / T), log softmax(s / T)) (the KL
    divergence up to the teacher's entropy) with the same temperature T for teacher t and student s.

    ``teacher_logits`` maps an augmented batch to the teacher's logits; ``identity`` names the teacher (e.g. its
    sha256) so that a checkpoint of another teacher's training is not resumed."""

    teacher_logits: Callable[[Tensor], Tensor]
    temperature: float = 1.0
    identity: str = ""

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0 (got {self.temperature})")

    def loss(self, student_logits: Tensor, augmented: Tensor) -> Tensor:
        with torch.no_grad():
            target = torch.softmax(self.teacher_logits(augmented).float() / self.temperature, dim=1)
        return soft_cross_entropy(student_logits / self.temperature, target)


def train_classifier(
    net: nn.Module,
    train: ImageSet,
    config: EvalConfig,
    *,
    generator: torch.Generator,
    device: torch.device,
    extra_loss: Callable[[nn.Module, Tensor, Tensor], Tensor] | None = None,
    progress: bool = False,
    forward: Callable[[Tensor], Tensor] | None = None,
    checkpoint: TrainingCheckpoint | None = None,
    relabel: Relabel | None = None,
) -> nn.Module:
    """Train ``net`` on ``train`` with the protocol's optimiser, schedule and DSA.

    ``extra_loss(net, augmented_images, batch_indices)`` may add a term (used by ELF). ``relabel`` replaces the
    set's labels by a teacher's labels of every augmented batch (:class:`Relabel`). With a ``checkpoint`` the
    training resumes from it and saves to it (state outside ``net``, e.g. in ``extra_loss``, is not kept).
    """
    started = time.perf_counter()
    images = train.images.to(device)
    targets = (train.soft_labels if train.soft_labels is not None else train.labels).to(device)
    forward = forward if forward is not None else compiled(net, config)
    dsa = DSA(config.dsa_strategy) if config.dsa else None
    decay_epoch = config.epochs // 2 + 1
    saved = checkpoint.restore() if checkpoint is not None else None
    first_epoch = saved[0] if saved is not None else 0
    lr = config.lr * (0.1 if first_epoch > decay_epoch else 1.0)

    def make_optimizer() -> torch.optim.Optimizer:
        return torch.optim.SGD(net.parameters(), lr=lr, momentum=config.momentum, weight_decay=config.weight_decay)

    optimizer = make_optimizer()
    if saved is not None:
        load_training_state(saved[1], net, optimizer)
        generator.set_state(saved[1]["generator"])
    net.train()
    n = images.shape[0]
    epochs = range(first_epoch, config.epochs + 1)
    for epoch in tqdm(epochs, desc=f"train {config.model}", leave=False, disable=not progress):
        if epoch == decay_epoch:
            lr *= 0.1
            optimizer = make_optimizer()
        order = torch.randperm(n, generator=generator).to(device)
        for start in range(0, n, config.batch_size):
            idx = order[start : start + config.batch_size]
            x = images[idx]
            if dsa is not None:
                x = dsa(x, generator=generator, siamese=False)
            with precision_autocast(device, config.precision):
                logits = forward(x)
            logits = logits.float()
            y = targets[idx]
            if relabel is not None:
                loss = relabel.loss(logits, x)
            elif y.is_floating_point():
                loss = soft_cross_entropy(logits, y)
            else:
                loss = F.cross_entropy(logits, y)
            if extra_loss is not None:
                loss = loss + extra_loss(net, x, idx)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"training loss became {loss.item()} at epoch {epoch}; the synthetic set may contain "
                    "NaN/Inf pixels or the learning rate is too high"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if checkpoint is not None and epoch < config.epochs and checkpoint.due():  # not once training is over
            checkpoint.save({**training_state(net, optimizer), "generator": generator.get_state()}, epoch=epoch + 1,
                            seconds=checkpoint.earlier_seconds + time.perf_counter() - started)
    return net


@torch.inference_mode()
def test_accuracy(
    net: nn.Module,
    test: ImageSet,
    num_classes: int,
    *,
    device: torch.device,
    config: EvalConfig,
    forward: Callable[[Tensor], Tensor] | None = None,
) -> tuple[float, list[float]]:
    """Top-1 accuracy (percent) and per-class accuracy on ``test``."""
    net.eval()
    correct = torch.zeros(num_classes, dtype=torch.float64)
    total = torch.bincount(test.labels, minlength=num_classes).double()
    for start in range(0, len(test), config.test_batch_size):
        x = test.images[start : start + config.test_batch_size].to(device)
        with precision_autocast(device, config.precision):
            pred = (forward if forward is not None else net)(x).argmax(dim=1).cpu()
        y = test.labels[start : start + config.test_batch_size]
        correct += torch.bincount(y[pred == y], minlength=num_classes).double()
    accuracy = 100.0 * float(correct.sum() / total.sum())
    per_class = (100.0 * correct / total.clamp_min(1)).tolist()
    return accuracy, per_class
