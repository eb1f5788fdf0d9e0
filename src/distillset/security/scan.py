"""Backdoor scan of a distilled set from the set alone (no key, no raw data, no clean reference).

Trigger reverse-engineering as Neural Cleanse (Wang et al., S&P 2019), on a proxy model trained on the set:

1. Train a proxy on the set (full-batch SGD, as the attacker's proxy in
   :func:`distillset.security.dark_distillation.train_proxy`).
2. For every class t, find the smallest mask ``m_t`` (sigmoid of free logits, one per pixel) and pattern ``p_t``
   that send the set's images of the other classes to t: minimise over ``(m_t, p_t)``
   ``CE(f((1 - m_t) x + m_t p_t), t) + lambda * |m_t|_1``. The pattern may use the value range the set itself
   uses (``tanh`` scaled to the set's largest absolute pixel), since distilled pixels are not clamped.
3. A backdoor target needs a much smaller mask than the other classes. Anomaly index of class t:
   ``(median_c L1_c - L1_t) / (1.4826 * MAD_c L1_c)`` (only the small side counts); the set is flagged when the
   largest index exceeds ``threshold`` (Neural Cleanse's 2, fixed in advance; docs/security.md).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from distillset.data.base import DatasetInfo, ImageSet
from distillset.security.dark_distillation import train_proxy


@dataclass
class ScanConfig:
    model: str = "convnet3"
    width: int | None = 32
    proxy_steps: int = 100
    lr_net: float = 0.01
    images_per_class: int = 2  # images of each class the triggers are optimised over
    steps: int = 100  # Adam steps of the trigger optimisation
    lr: float = 0.1
    l1_weight: float = 0.01  # lambda, per pixel of mask mass
    threshold: float = 2.0  # anomaly index above which the set is flagged
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ScanResult:
    flagged: bool
    suspect_class: int  # the class with the smallest reverse-engineered mask
    anomaly_index: float
    threshold: float
    mask_l1: list[float]  # per class
    flip_rate: list[float]  # per class: share of the other classes' images sent to it by its reversed trigger
    seconds: float
    config: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def anomaly_indices(values: Tensor) -> Tensor:
    """Neural Cleanse's anomaly index on the small side: ``(median - v) / (1.4826 * MAD)``, floored at 0."""
    median = values.median()
    mad = (values - median).abs().median().clamp_min(1e-12)
    return ((median - values) / (1.4826 * mad)).clamp_min(0.0)


def _scan_images(synthetic: ImageSet, per_class: int, num_classes: int, generator: torch.Generator) -> ImageSet:
    picks = []
    for c in range(num_classes):
        members = synthetic.class_indices(c)
        picks.append(members[torch.randperm(len(members), generator=generator)[:per_class]])
    return synthetic.subset(torch.cat(picks))


def reverse_engineer_triggers(net: torch.nn.Module, images: ImageSet, num_classes: int, config: ScanConfig,
                              bound: float, device: torch.device) -> tuple[Tensor, Tensor]:
    """Per class: the L1 norm of the optimised mask and the share of other-class images it flips (all classes
    optimised together in one batch)."""
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    x = images.images.to(device)
    labels = images.labels.to(device)
    shape = x.shape[1:]
    mask_logits = torch.full((num_classes, 1, *shape[1:]), -3.0, device=device, requires_grad=True)
    pattern_free = torch.zeros((num_classes, *shape), device=device, requires_grad=True)
    optimizer = torch.optim.Adam([mask_logits, pattern_free], lr=config.lr)
    targets = torch.arange(num_classes, device=device).repeat_interleave(len(x))
    others = (labels[None, :] != torch.arange(num_classes, device=device)[:, None]).reshape(-1).float()

    def stamped() -> tuple[Tensor, Tensor]:
        mask = torch.sigmoid(mask_logits)
        pattern = bound * torch.tanh(pattern_free)
        mixed = (1 - mask[:, None]) * x[None] + (mask * pattern)[:, None]
        return mask, mixed.reshape(-1, *shape)

    for _ in range(config.steps):
        mask, batch = stamped()
        ce = F.cross_entropy(net(batch), targets, reduction="none")
        loss = (ce * others).sum() / others.sum() * num_classes + config.l1_weight * mask.sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        mask, batch = stamped()
        hits = (net(batch).argmax(1) == targets).float() * others
        flip = (hits.reshape(num_classes, -1).sum(1) / others.reshape(num_classes, -1).sum(1).clamp_min(1)).cpu()
        l1 = mask.reshape(num_classes, -1).sum(1).cpu()
    for p in net.parameters():
        p.requires_grad_(True)
    return l1, flip


def scan_set(synthetic: ImageSet, info: DatasetInfo, config: ScanConfig | None = None, *,
             device: str | torch.device = "cpu") -> ScanResult:
    """Train a proxy on ``synthetic``, reverse-engineer one trigger per class and flag an outlier class."""
    config = config or ScanConfig()
    device = torch.device(device)
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(config.seed)
    proxy = train_proxy(synthetic, info, model=config.model, width=config.width, steps=config.proxy_steps,
                        lr=config.lr_net, seed=config.seed, device=device)
    images = _scan_images(synthetic, config.images_per_class, info.num_classes, generator)
    bound = float(synthetic.images.abs().max())
    l1, flip = reverse_engineer_triggers(proxy, images, info.num_classes, config, bound, device)
    # a class whose trigger does not flip most images gets no credit for a small mask
    effective = torch.where(flip >= 0.5, l1, torch.full_like(l1, float(l1.max())))
    index = anomaly_indices(effective)
    suspect = int(index.argmax())
    return ScanResult(bool(index[suspect] > config.threshold), suspect, float(index[suspect]), config.threshold,
                      l1.tolist(), flip.tolist(), time.perf_counter() - start, config.to_dict())
