"""UniDD/CFM's decoupled, teacher-based pipeline (Bo, Liu & Wang, ICLR 2026; docs/unidd_cfm.md Sec. 8).

Unlike the DM loop (a fresh random network per iteration, engine/distiller.py), the paper's CFM recovers
images against one trained teacher, SRe2L-style, and its sets are evaluated with the teacher's soft labels:

1. statistics: a forward pre-hook on every ``nn.Conv2d`` of the frozen teacher (eval mode) takes the layer's
   input, spatial positions as samples, and gives the channel mean ``s`` and the centred channel covariance
   ``cov`` (C x C). The real ones are accumulated over the real training images (float64);
2. recover: the synthetic set is made of ``ipc`` batches b = 0..B-1 of one image per class. Batch b is
   matched with the ridge filter R = (cov + beta_b I)^-1 (objectives/unidd.py's :class:`RidgeFilter`, Eq. 9):

       L_b = CE(teacher(x_b), y) + eta * sum_l ( ||R_r - R_b||_F + ||R_r s_r - R_b s_b||_2 )

   with eta = 0.1, Adam (lr 0.25, betas 0.5 / 0.9) and a cosine learning-rate decay over ``iterations``
   steps. CFM's curriculum is over the batches, with an absolute beta: beta_b = beta_max (1 + cos(pi b / B)) / 2,
   beta_max = 0.1 (Eq. 13). ``lowpass-teacher`` / ``highpass-teacher`` hold beta fixed; ``dm-teacher`` uses
   f = 1 (:class:`IdentityFilter`: the filter term vanishes and the signal term matches the channel means);
3. relabel: evaluation takes the teacher's soft labels (``distillset evaluate --soft-labels TEACHER``).

The B batches are independent problems; they are optimised together (one forward pass for all images, the
sum of the batch losses), which gives every batch exactly its own Adam trajectory since Adam is elementwise.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from torch import Tensor, nn
from tqdm.auto import tqdm

from distillset.data.base import DatasetInfo, ImageSet
from distillset.io import ArtifactError, CheckpointMismatchError, atomic_save_tensors
from distillset.objectives.unidd import IdentityFilter, RidgeFilter, SpectralFilter
from distillset.runtime import compile_or_eager

TEACHER_METHODS = ("cfm-teacher", "lowpass-teacher", "highpass-teacher", "dm-teacher")


@dataclass
class TeacherMatchingConfig:
    """Settings of the decoupled pipeline; defaults are the official CFM code's (docs/unidd_cfm.md Sec. 8)."""

    method: str = "cfm-teacher"
    ipc: int = 10
    iterations: int = 1000  # per IPC batch (all batches run them together)
    lr: float = 0.25
    adam_betas: tuple[float, float] = (0.5, 0.9)
    eta: float = 0.1  # weight of the statistics terms
    beta_max: float = 0.1  # CFM: beta_b = beta_max (1 + cos(pi b / B)) / 2; lowpass-teacher: fixed beta_max
    highpass_beta: float = 1e-3  # highpass-teacher's fixed beta
    init: str = "real"  # real: a random real image of the class; noise: N(0, 1) in normalised space
    real_images: int | None = None  # real images for the statistics (None: the whole training split)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in TEACHER_METHODS:
            raise ValueError(f"unknown teacher method '{self.method}'; choose one of: {', '.join(TEACHER_METHODS)}")
        if self.ipc < 1 or self.iterations < 1:
            raise ValueError(f"ipc and iterations must be >= 1 (got {self.ipc}, {self.iterations})")
        if not (self.beta_max > 0 and self.highpass_beta > 0):
            raise ValueError(f"beta_max and highpass_beta must be > 0 (got {self.beta_max}, {self.highpass_beta})")
        if self.init not in ("real", "noise"):
            raise ValueError(f"init must be 'real' or 'noise', got {self.init!r}")
        if self.real_images is not None and self.real_images < 1:
            raise ValueError(f"real_images must be None (all) or >= 1, got {self.real_images}")
        self.adam_betas = tuple(self.adam_betas)  # type: ignore[assignment]  # JSON round trip gives a list

    def batch_filters(self) -> list[SpectralFilter]:
        """The filter of each IPC batch b = 0..ipc-1."""
        if self.method == "dm-teacher":
            return [IdentityFilter()] * self.ipc
        if self.method == "lowpass-teacher":
            return [RidgeFilter(self.beta_max)] * self.ipc
        if self.method == "highpass-teacher":
            return [RidgeFilter(self.highpass_beta)] * self.ipc
        return [RidgeFilter(cfm_beta(b, self.ipc, self.beta_max)) for b in range(self.ipc)]


def cfm_beta(batch: int, batches: int, beta_max: float) -> float:
    """beta_b = beta_max (1 + cos(pi b / B)) / 2 (Eq. 13 over the IPC batches; b < B keeps it > 0)."""
    return beta_max * (1.0 + math.cos(math.pi * batch / batches)) / 2.0


@dataclass(frozen=True)
class ChannelStatistics:
    """Channel mean (C,) and centred channel covariance (C, C) of one layer input."""

    mean: Tensor
    cov: Tensor


def channel_statistics(activation: Tensor) -> ChannelStatistics:
    """Statistics of an (N, C, H, W) activation, every sample and position an observation."""
    rows = activation.transpose(0, 1).reshape(activation.shape[1], -1).T  # (N*H*W, C)
    mean = rows.mean(dim=0)
    centred = rows - mean
    return ChannelStatistics(mean, centred.T @ centred / rows.shape[0])


@contextmanager
def conv_inputs(net: nn.Module) -> Iterator[list[Tensor]]:
    """Collect the input of every ``nn.Conv2d`` of ``net`` during the forward passes inside the block."""
    captured: list[Tensor] = []
    handles = [module.register_forward_pre_hook(lambda _module, args: captured.append(args[0]))
               for module in net.modules() if isinstance(module, nn.Conv2d)]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def real_statistics(teacher: nn.Module, images: Tensor, batch_size: int = 500) -> list[ChannelStatistics]:
    """Per-layer statistics of all ``images`` (sums accumulated in float64, exact over batches)."""
    teacher.eval()
    device = next(teacher.parameters()).device
    sums: list[tuple[Tensor, Tensor]] = []
    counts: list[int] = []
    for start in range(0, len(images), batch_size):
        with conv_inputs(teacher) as captured:
            teacher(images[start : start + batch_size].to(device))
        for index, activation in enumerate(captured):
            rows = activation.double().transpose(0, 1).reshape(activation.shape[1], -1)  # (C, N*H*W)
            if len(sums) <= index:
                sums.append((torch.zeros_like(rows[:, 0]), torch.zeros_like(rows[:, :1] @ rows[:, :1].T)))
                counts.append(0)
            sums[index][0].add_(rows.sum(dim=1))
            sums[index][1].add_(rows @ rows.T)
            counts[index] += rows.shape[1]
    if not sums:
        raise ValueError("the teacher has no nn.Conv2d layer whose input statistics could be matched")
    statistics = []
    for (total, outer), n in zip(sums, counts, strict=True):
        mean = total / n
        statistics.append(ChannelStatistics(mean.float(), (outer / n - torch.outer(mean, mean)).float()))
    return statistics


def statistics_distance(real: ChannelStatistics, synthetic: ChannelStatistics,
                        spectral_filter: SpectralFilter) -> Tensor:
    """||f(cov_r) - f(cov_s)||_F + ||f(cov_r) s_r - f(cov_s) s_s||_2 (not squared, as the official code)."""
    filter_term = torch.linalg.matrix_norm(spectral_filter.matrix(real.cov) - spectral_filter.matrix(synthetic.cov))
    signal = (spectral_filter.apply(real.cov, real.mean[:, None])
              - spectral_filter.apply(synthetic.cov, synthetic.mean[:, None]))
    return filter_term + torch.linalg.vector_norm(signal)


def batch_losses(teacher: nn.Module, images: Tensor, labels: Tensor, real: list[ChannelStatistics],
                 filters: list[SpectralFilter], eta: float) -> tuple[Tensor, dict[str, float]]:
    """Sum over the IPC batches of CE + eta * statistics distance; ``images`` are ordered batch-major
    (B x num_classes rows). Also returns the mean CE and statistics term for the log."""
    batches = len(filters)
    with conv_inputs(teacher) as captured:
        logits = teacher(images)
    ce = F.cross_entropy(logits.float(), labels, reduction="none").view(batches, -1).mean(dim=1)
    per_layer = []
    for activation, real_layer in zip(captured, real, strict=True):
        per_batch = activation.float().view(batches, -1, *activation.shape[1:])
        per_layer.append(torch.stack([statistics_distance(real_layer, channel_statistics(per_batch[b]), f)
                                      for b, f in enumerate(filters)]))
    matching = torch.stack(per_layer).sum(dim=0)
    total = (ce + eta * matching).sum()
    return total, {"ce": float(ce.detach().mean()), "statistics": float(matching.detach().mean())}


def initial_images(real: ImageSet, num_classes: int, config: TeacherMatchingConfig) -> tuple[Tensor, Tensor]:
    """Batch-major images (ipc * num_classes) and their labels: batch b holds one image per class."""
    generator = torch.Generator().manual_seed(config.seed)
    labels = torch.arange(num_classes).repeat(config.ipc)
    if config.init == "noise":
        shape = (len(labels), *real.images.shape[1:])
        return torch.randn(shape, generator=generator), labels
    picks = []
    for c in range(num_classes):
        pool = real.class_indices(c)
        if len(pool) < config.ipc:
            raise ValueError(f"class {c} has {len(pool)} real images, fewer than ipc={config.ipc}; use init=noise")
        picks.append(pool[torch.randperm(len(pool), generator=generator)[: config.ipc]])
    order = torch.stack(picks, dim=1).reshape(-1)  # (ipc, classes) batch-major
    return real.images[order].clone(), labels


def _identity(config: TeacherMatchingConfig, teacher_sha: str) -> str:
    return repr(sorted({**asdict(config), "teacher": teacher_sha}.items()))


def distill_with_teacher(
    real: ImageSet,
    info: DatasetInfo,
    teacher: nn.Module,
    config: TeacherMatchingConfig,
    *,
    teacher_sha256: str = "",
    checkpoint: str | Path | None = None,
    checkpoint_seconds: float = 300.0,
    device: str | torch.device = "cpu",
    compile: bool = False,
    progress: bool = False,
) -> tuple[ImageSet, dict[str, float]]:
    """Recover ``config.ipc`` images per class against ``teacher`` (frozen). With ``checkpoint`` the run saves
    its images, Adam state and step there (at most every ``checkpoint_seconds``) and resumes from it.
    ``compile`` runs the loss (teacher forward + statistics) through ``torch.compile`` (eager where compilation
    fails); the settings, and so a checkpoint's identity, do not depend on it.
    Returns the set (hard labels; soft labels are an evaluation option) and the last log entry."""
    device = torch.device(device)
    teacher = teacher.to(device).eval()
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    started = time.perf_counter()
    pool = real
    if config.real_images is not None and config.real_images < len(real):
        pool = real.subset(torch.randperm(len(real), generator=torch.Generator().manual_seed(config.seed + 1))
                           [: config.real_images])
    real_stats = [ChannelStatistics(s.mean.to(device), s.cov.to(device)) for s in real_statistics(teacher, pool.images)]
    filters = config.batch_filters()
    images, labels = initial_images(real, info.num_classes, config)
    images, labels = images.to(device).requires_grad_(True), labels.to(device)
    optimizer = torch.optim.Adam([images], lr=config.lr, betas=config.adam_betas)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * step / config.iterations)))  # cosine to 0
    identity = _identity(config, teacher_sha256)
    first, earlier_seconds = 0, 0.0
    checkpoint_path = Path(checkpoint) if checkpoint is not None else None
    if checkpoint_path is not None and checkpoint_path.is_file():
        first, earlier_seconds = _restore(checkpoint_path, identity, images, optimizer, schedule)
    losses = compile_or_eager(batch_losses, compile)
    log: dict[str, float] = {}
    last_save = time.perf_counter()
    for step in tqdm(range(first, config.iterations), desc=config.method, disable=not progress, leave=False):
        loss, log = losses(teacher, images, labels, real_stats, filters, config.eta)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the {config.method} loss became {loss.item()} at step {step}; lower lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if checkpoint_path is not None and time.perf_counter() - last_save >= checkpoint_seconds:
            _save(checkpoint_path, identity, images, optimizer, step + 1,
                  earlier_seconds + time.perf_counter() - started)
            last_save = time.perf_counter()
    log["seconds"] = earlier_seconds + time.perf_counter() - started
    if checkpoint_path is not None:
        checkpoint_path.unlink(missing_ok=True)
    return ImageSet(images.detach().cpu(), labels.cpu()), log


def _save(path: Path, identity: str, images: Tensor, optimizer: torch.optim.Optimizer, step: int,
          seconds: float) -> None:
    state = optimizer.state[optimizer.param_groups[0]["params"][0]]
    atomic_save_tensors(path, {"images": images, "exp_avg": state["exp_avg"], "exp_avg_sq": state["exp_avg_sq"]},
                        metadata={"identity": identity, "step": str(step), "seconds": repr(seconds)})


def _restore(path: Path, identity: str, images: Tensor, optimizer: torch.optim.Optimizer,
             schedule: torch.optim.lr_scheduler.LambdaLR) -> tuple[int, float]:
    try:
        with safe_open(path, framework="pt") as handle:
            metadata = handle.metadata() or {}
            saved = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError) as exc:
        raise ArtifactError(f"checkpoint {path} is unreadable ({exc}); delete it to start over") from exc
    if metadata.get("identity") != identity:
        raise CheckpointMismatchError(f"{path} belongs to another run (settings or teacher differ); delete it to "
                                      "start over")
    step = int(metadata["step"])
    with torch.no_grad():
        images.copy_(saved["images"])
    optimizer.state[images] = {"step": torch.tensor(float(step)), "exp_avg": saved["exp_avg"].to(images.device),
                               "exp_avg_sq": saved["exp_avg_sq"].to(images.device)}
    schedule.last_epoch = step
    for group, factor in zip(optimizer.param_groups, schedule.lr_lambdas, strict=True):  # the value at ``step``
        group["lr"] = group["initial_lr"] * factor(step)
    return step, float(metadata["seconds"])
