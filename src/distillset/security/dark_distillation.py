"""Dark Distillation (Yang et al., arXiv 2502.04229; AAAI 2026 as "Poisoned Distillation"): a backdoor injected
into a distilled set by someone who has only the set, no raw data. A research and audit tool: it shows what an
attacker on the distribution channel can do, so that :mod:`distillset.security.signing` and
:mod:`distillset.security.scan` can be tested against it.

Steps, following ``main.py`` of Zi-YuanYang/Poisoned_DD (docs/security.md lists every choice):

1. Proxy: a ConvNet trained ``proxy_steps`` full-batch SGD steps on the set S (lr 0.01, momentum 0.9, wd 5e-4);
   or, for an audit against a stronger attacker who holds a classifier of the task (a published model) but
   still no raw data, a teacher (:mod:`distillset.training.teachers`) in its place.
2. Archetypes by model inversion: per class c, ``a ~ N(0, I)`` optimised with Adam to maximise ``f(a)[c]``.
3. Backdoor set B: the archetypes with the trigger stamped, every one relabelled to the target t.
4. Hybrid update of the pixels of S' (initialised as S, labels kept): at trajectory points i = 0..I a fresh
   ConvNet theta_i trained i full-batch steps on a batch of S; ``match_steps`` Adam steps on

       L(S') = (1 - alpha) D(g(theta_i; S'), g(theta_i; S_batch)) + alpha D(g(theta_i; S'), g(theta_i; B, t))

   with g the gradient of the cross-entropy w.r.t. theta_i and D the cosine distance of the concatenated
   gradients, ``1 - <a, b> / (|a| |b| + 1e-6)``. The first term keeps the knowledge of S (benign trajectory),
   the second carries the backdoor. The trigger is never stamped on S'.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from distillset.data.base import DatasetInfo, ImageSet
from distillset.nets import get_network
from distillset.security.triggers import Trigger, TriggerSpec
from distillset.training import soft_cross_entropy
from distillset.training.teachers import Teacher, teacher_of, teacher_record

Metric = Literal["cos", "mse"]


@dataclass
class DarkDistillationConfig:
    """Settings of the attack; defaults are those of Zi-YuanYang/Poisoned_DD ``main.py``."""

    target: int = 0
    trigger: TriggerSpec = field(default_factory=TriggerSpec)
    alpha: float = 0.6  # weight of the backdoor term
    model: str = "convnet3"  # proxy and trajectory networks
    width: int | None = None  # their width where the network has one (None: the network's default, 128)
    proxy_steps: int = 100  # full-batch SGD steps of the proxy (epoch_eval_train)
    lr_net: float = 0.01
    archetypes_per_class: int = 1  # num_recon_imgs
    inversion_steps: int = 200  # recon_step
    inversion_lr: float = 0.1
    trajectory_points: int = 10  # Iteration: points i = 0..trajectory_points
    match_steps: int = 101  # fing_train_epoc + 1 image updates per point and batch
    lr_images: float = 0.1
    batch_size: int = 256  # batch_train: the benign term sees S in batches of this size
    metric: Metric = "cos"
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha weighs the backdoor term and must be in [0, 1], got {self.alpha}")
        if self.metric not in ("cos", "mse"):
            raise ValueError(f"unknown gradient distance '{self.metric}'; choose cos or mse")
        for name in ("proxy_steps", "inversion_steps", "trajectory_points", "match_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.archetypes_per_class < 1 or self.batch_size < 1:
            raise ValueError("archetypes_per_class and batch_size must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class AttackResult:
    poisoned: ImageSet
    backdoor: ImageSet  # the triggered archetypes, all labelled with the target
    trigger: Trigger
    seconds: float
    losses: list[dict[str, float]]  # per trajectory point (its last batch): the benign and backdoor distances
    # at the first (``*_first``) and last image update
    proxy_teacher: dict[str, Any] | None = None  # the teacher used as the proxy (folder, sha256), if any


def build_network(model: str, width: int | None, info: DatasetInfo, seed: int, device: torch.device) -> nn.Module:
    """``model`` for ``info``'s images, seeded, with ``width`` where given (ConvNet)."""
    options = {} if width is None else {"width": width}
    return get_network(model, info.channels, info.num_classes, info.image_size, seed=seed, **options).to(device)


def _loss(logits: Tensor, targets: Tensor) -> Tensor:
    return soft_cross_entropy(logits, targets) if targets.is_floating_point() else F.cross_entropy(logits, targets)


def gradient_distance(a: Sequence[Tensor], b: Sequence[Tensor], metric: Metric = "cos") -> Tensor:
    """``cos``: 1 - cosine similarity of the concatenated gradients (+1e-6 in the denominator, as the reference);
    ``mse``: squared L2 distance of the concatenated gradients."""
    flat_a = torch.cat([g.reshape(-1) for g in a])
    flat_b = torch.cat([g.reshape(-1) for g in b])
    if metric == "mse":
        return ((flat_a - flat_b) ** 2).sum()
    return 1.0 - (flat_a * flat_b).sum() / (flat_a.norm() * flat_b.norm() + 1e-6)


def _sgd_steps(net: nn.Module, images: Tensor, targets: Tensor, steps: int, lr: float) -> nn.Module:
    """``steps`` full-batch SGD steps (momentum 0.9, weight decay 5e-4), as ``epoch__`` of the reference."""
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        _loss(net(images), targets).backward()
        optimizer.step()
    return net


def train_proxy(synthetic: ImageSet, info: DatasetInfo, *, model: str, width: int | None, steps: int, lr: float,
                seed: int, device: torch.device) -> nn.Module:
    """Step 1: a proxy model trained on the distilled set only (``steps`` full-batch SGD steps)."""
    net = build_network(model, width, info, seed, device)
    targets = synthetic.soft_labels if synthetic.soft_labels is not None else synthetic.labels
    return _sgd_steps(net, synthetic.images.to(device), targets.to(device), steps, lr)


def invert_archetypes(net: nn.Module, info: DatasetInfo, per_class: int, steps: int, lr: float,
                      generator: torch.Generator, device: torch.device) -> ImageSet:
    """Step 2: per class, ``per_class`` images from N(0, I) that maximise the class logit (Adam, no priors)."""
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    labels = torch.arange(info.num_classes).repeat_interleave(per_class)
    images = torch.randn((len(labels), info.channels, *info.image_size), generator=generator).to(device)
    images.requires_grad_(True)
    optimizer = torch.optim.Adam([images], lr=lr)
    index = labels.to(device)
    for _ in range(steps):  # all archetypes at once: each loss term depends on its own image only
        optimizer.zero_grad(set_to_none=True)
        (-net(images).gather(1, index[:, None]).sum()).backward()
        optimizer.step()
    for p in net.parameters():
        p.requires_grad_(True)
    return ImageSet(images.detach().cpu(), labels)


def dark_distillation(
    synthetic: ImageSet,
    info: DatasetInfo,
    config: DarkDistillationConfig | None = None,
    *,
    device: str | torch.device = "cpu",
    progress: bool = False,
    on_point: Callable[[int, dict[str, float]], None] | None = None,
    proxy_teacher: str | Path | Teacher | None = None,
) -> AttackResult:
    """Inject a backdoor for ``config.target`` into ``synthetic`` (normalised images) without raw data.

    ``proxy_teacher`` (a teacher folder or a loaded teacher of ``info``'s dataset) replaces step 1's proxy: the
    archetypes are inverted from the teacher (an attacker holding a trained classifier of the task); the
    trajectory networks of step 4 are unchanged."""
    config = config or DarkDistillationConfig()
    device = torch.device(device)
    if not 0 <= config.target < info.num_classes:
        raise ValueError(f"target class {config.target} out of range for {info.num_classes} classes of '{info.name}'")
    if tuple(synthetic.images.shape[1:]) != (info.channels, *info.image_size):
        raise ValueError(f"the set's images have shape {tuple(synthetic.images.shape[1:])}, dataset '{info.name}' "
                         f"has {(info.channels, *info.image_size)}")
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(config.seed)
    trigger = config.trigger.build(info)

    teacher = (teacher_of(proxy_teacher, info, use="dark distillation proxy", device=device)
               if proxy_teacher is not None else None)
    proxy = teacher.net if teacher is not None else train_proxy(
        synthetic, info, model=config.model, width=config.width, steps=config.proxy_steps, lr=config.lr_net,
        seed=config.seed, device=device)
    archetypes = invert_archetypes(proxy, info, config.archetypes_per_class, config.inversion_steps,
                                   config.inversion_lr, generator, device)
    backdoor = ImageSet(trigger.apply(archetypes.images), torch.full_like(archetypes.labels, config.target))
    backdoor_x, backdoor_y = backdoor.images.to(device), backdoor.labels.to(device)

    original = synthetic.images.to(device)
    targets = (synthetic.soft_labels if synthetic.soft_labels is not None else synthetic.labels).to(device)
    poisoned = original.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([poisoned], lr=config.lr_images)
    losses: list[dict[str, float]] = []
    points = range(config.trajectory_points + 1)
    for point in tqdm(points, desc="dark distillation", leave=False, disable=not progress):
        order = torch.randperm(len(synthetic), generator=generator).to(device)
        for batch_start in range(0, len(synthetic), config.batch_size):
            idx = order[batch_start: batch_start + config.batch_size]
            net_seed = config.seed * 100_003 + 1 + point * 1_009 + batch_start
            net = build_network(config.model, config.width, info, net_seed, device)
            net = _sgd_steps(net, original[idx], targets[idx], point, config.lr_net)
            params = list(net.parameters())
            # theta_i is fixed during the image updates, so both reference gradients are computed once.
            g_benign = [g.detach() for g in torch.autograd.grad(_loss(net(original[idx]), targets[idx]), params)]
            g_backdoor = [g.detach() for g in torch.autograd.grad(_loss(net(backdoor_x), backdoor_y), params)]
            record: dict[str, float] = {"point": float(point)}
            for step in range(config.match_steps):
                g_syn = torch.autograd.grad(_loss(net(poisoned), targets), params, create_graph=True)
                benign = gradient_distance(g_syn, g_benign, config.metric)
                backdoored = gradient_distance(g_syn, g_backdoor, config.metric)
                loss = (1.0 - config.alpha) * benign + config.alpha * backdoored
                optimizer.zero_grad(set_to_none=True)
                loss.backward(inputs=[poisoned])
                optimizer.step()
                if step == 0:
                    record.update(benign_first=float(benign.detach()), backdoor_first=float(backdoored.detach()))
            if config.match_steps:
                record.update(benign=float(benign.detach()), backdoor=float(backdoored.detach()))
        losses.append(record)
        if on_point is not None:
            on_point(point, record)
    result_images = poisoned.detach().cpu()
    soft = synthetic.soft_labels.clone() if synthetic.soft_labels is not None else None
    return AttackResult(ImageSet(result_images, synthetic.labels.clone(), soft), backdoor, trigger,
                        time.perf_counter() - start, losses, teacher_record(teacher) if teacher is not None else None)


def attack_success_rate(net: nn.Module, test: ImageSet, trigger: Trigger, target: int, *,
                        device: torch.device, exclude_target: bool = True, batch_size: int = 1000) -> float:
    """Percent of triggered test images classified as ``target``; by default over the non-target images
    (the reference's ``asr_clean`` keeps them, so its floor is about 1/C)."""
    keep = test.labels != target if exclude_target else torch.ones_like(test.labels, dtype=torch.bool)
    images = test.images[keep]
    net.eval()
    hits = 0
    with torch.inference_mode():
        for s in range(0, len(images), batch_size):
            x = trigger.apply(images[s: s + batch_size].to(device))
            hits += int((net(x).argmax(1) == target).sum())
    return 100.0 * hits / max(len(images), 1)
