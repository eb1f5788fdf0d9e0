"""The Minimax evaluation protocol (vimar-gu/MinimaxDiffusion ``train.py``), used by Minimax, D4M and VLCP on
ImageNet subsets: hard labels, CutMix, SGD with step decay, and the best test accuracy over periodic evaluations.

SGD (lr 0.01, momentum 0.9, weight decay 5e-4), batch 64, lr x0.2 at 2/3 and 5/6 of the epochs, CutMix with
probability 1 and ``lam ~ Beta(1, 1)``, a test evaluation every ``epochs / 100`` epochs; the reference reports the
best of those evaluations (the papers' tables), this module reports both the best and the final one. The
reference's torchvision augmentation (RandomResizedCrop 0.5-1, flip, colour jitter 0.4, PCA lighting) is
replaced by DSA's crop, scale, flip and colour ops, which act on the normalised tensors this package keeps.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from distillset.augment import DSA, cutmix
from distillset.data.base import ImageSet
from distillset.runtime import precision_autocast
from distillset.training.classifier import EvalConfig, compiled, test_accuracy


def minimax_epochs(ipc: int, num_classes: int) -> int:
    """Training epochs of the reference by images per class; for 100 classes x2/3, rounded down to 100s."""
    epochs = 3000 if ipc <= 1 else 2000 if ipc <= 10 else 1500 if ipc <= 50 else 1000 if ipc <= 200 else (
        500 if ipc <= 500 else 300)
    return epochs * 2 // 3 // 100 * 100 if num_classes >= 100 else epochs


@dataclass
class MinimaxConfig:
    """Settings of one Minimax-protocol evaluation (defaults = the reference for <= 100 classes)."""

    model: str = "resnetap10"
    epochs: int = 2000
    num_models: int = 3
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 64
    cutmix_prob: float = 1.0
    cutmix_beta: float = 1.0
    milestones: tuple[float, float] = (2 / 3, 5 / 6)
    gamma: float = 0.2
    evaluations: int = 100  # test evaluations spread over the training (every epochs / evaluations epochs)
    augment: str = "color_crop_flip_scale"
    image_size: int | None = None  # train and test at this size (bilinear resize); None: the dataset's
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.num_models < 1 or self.batch_size < 1 or self.evaluations < 1:
            raise ValueError("epochs, num_models, batch_size and evaluations must be >= 1")
        if not 0.0 <= self.cutmix_prob <= 1.0:
            raise ValueError(f"cutmix_prob must be in [0, 1], got {self.cutmix_prob}")

    def test_config(self) -> EvalConfig:
        return EvalConfig(model=self.model, epochs=self.epochs, num_models=self.num_models, precision="fp32",
                          compile=False, seed=self.seed)


@dataclass
class MinimaxModelResult:
    best: float  # percent, best over the periodic evaluations (what the reference reports)
    final: float  # percent, last epoch
    train_seconds: float


def train_minimax(net: nn.Module, train: ImageSet, test: ImageSet, num_classes: int, config: MinimaxConfig, *,
                  generator: torch.Generator, device: torch.device) -> MinimaxModelResult:
    """Train ``net`` on ``train`` (hard labels) with the Minimax recipe, testing on ``test`` along the way."""
    started = time.perf_counter()
    images, labels = train.images.to(device), train.labels.to(device)
    test_config = config.test_config()
    forward = compiled(net, test_config)
    dsa = DSA(config.augment) if config.augment else None
    optimizer = torch.optim.SGD(net.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, [int(config.epochs * m) for m in config.milestones], gamma=config.gamma)
    every = max(1, config.epochs // config.evaluations)
    best = final = 0.0
    for epoch in range(config.epochs):
        net.train()
        order = torch.randperm(len(images), generator=generator).to(device)
        for start in range(0, len(images), config.batch_size):
            idx = order[start:start + config.batch_size]
            x, y = images[idx], labels[idx]
            if dsa is not None:
                x = dsa(x, generator=generator, siamese=False)
            mix = float(torch.rand(1, generator=generator)) < config.cutmix_prob
            if mix:
                x, perm, kept = cutmix(x, generator, config.cutmix_beta)
            with precision_autocast(device, "fp32"):
                logits = forward(x).float()
            loss = F.cross_entropy(logits, y)
            if mix:
                loss = kept * loss + (1.0 - kept) * F.cross_entropy(logits, y[perm])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        scheduler.step()
        if (epoch + 1) % every == 0 or epoch + 1 == config.epochs:
            final = test_accuracy(net, test, num_classes, device=device, config=test_config, forward=forward)[0]
            best = max(best, final)
    return MinimaxModelResult(best, final, time.perf_counter() - started)
