"""ELF: evaluation with distillation features (Zhao et al., arXiv 2312.05598; notes: elf.md).

A network of the distillation family, trained on the real data, is cut after stage ``feature_split``;
its activations ``f = F(x)`` on the un-augmented synthetic images are computed once and frozen. The
evaluation network E is cut after stage ``eval_split`` into a front h_E and a rear r_E, and trained on
the synthetic set with (elf.md section 4, ``front_rear_task`` mode)::

    L = CE(r_E(h_E(x~)), y) + lambda_front * D(h_E(x~), f) + lambda_rear * CE(r_E(f), y),   x~ = DSA(x)

Shapes. The reference pairs E and F so that h_E(x) and f have the same shape (e.g. ResNet-18 after the
first block of layer4 and a width-512 ConvNet-3, both 512x4x4) and asserts it. Here the split of E is
chosen automatically (:func:`choose_eval_split`): the first stage whose output shape equals f's. Where
no stage matches exactly (e.g. ResNetAP-10 at 28 px gives 512x3x3), f is average-pooled once to E's
spatial size, and if the channel counts differ two learned 1x1 convolutions bridge them, trained with
E: ``to_feature`` (E -> F channels) for the front term, FitNets-style, and ``from_feature``
(F -> E channels) for the rear term. Neither is used when the shapes match, as in the reference.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distillset.coreset import select_coreset
from distillset.data.base import DatasetInfo, DatasetSplits, ImageSet
from distillset.evaluate.protocol import EvalResult, check_compatible, evaluate_synthetic
from distillset.nets import StagedNetwork, get_network
from distillset.training import EvalConfig, ModelResult, soft_cross_entropy, trained_feature_network
from distillset.training.teachers import load_teacher, read_manifest

FeatureLoss = Literal["ce", "l2", "l1", "cos"]
FEATURE_LOSSES: tuple[str, ...] = ("ce", "l2", "l1", "cos")
FEATURE_TARGETS: tuple[str, ...] = ("raw", "normalized")
Shape = tuple[int, ...]


@dataclass
class ELFConfig:
    """ELF settings; defaults follow ``ELF_eval.sh`` (elf.md sections 3-5) except the feature-net training.

    The reference feature network is a width-512 ConvNet-3 trained 100 epochs with DSA (expert epoch 100).
    ``teacher`` is the folder of a trained teacher (``distillset teacher train``, docs/teachers.md), whose
    network then serves as the feature network (``feature_model``, ``feature_width``, ``feature_epochs`` and
    ``feature_train_size`` are not used). Without one, a quick stand-in is trained by
    :func:`~distillset.training.trained_feature_network` (no augmentation) for ``feature_epochs`` epochs on the
    whole train split, or on a class-balanced random subset of ``feature_train_size`` images, and cached.

    ``feature_target``: ``raw`` (the reference) uses the features f as they are, so the ``ce`` term scales with
    their channel sum; ``normalized`` divides f by its channel sum at each position, which makes the ``ce`` term
    a cross-entropy between distributions over channels, at most log(channels), on the scale of the task loss
    (docs/evaluation.md, ELF). The rear term always uses the raw f.
    """

    teacher: str | None = None

    feature_model: str = "convnet3"
    feature_width: int = 512
    feature_epochs: int = 3
    feature_train_size: int | None = None
    feature_seed: int = 0
    feature_split: int = -1
    eval_split: int | None = None
    lambda_front: float = 1.0
    lambda_rear: float = 1.0
    feature_loss: FeatureLoss = "ce"
    feature_target: str = "raw"

    def __post_init__(self) -> None:
        if self.feature_target not in FEATURE_TARGETS:
            raise ValueError(f"feature_target must be one of {', '.join(FEATURE_TARGETS)}, got {self.feature_target!r}")
        if self.feature_loss not in FEATURE_LOSSES:
            raise ValueError(f"feature_loss must be one of {', '.join(FEATURE_LOSSES)}, got {self.feature_loss!r}")
        if not (math.isfinite(self.lambda_front) and math.isfinite(self.lambda_rear)) or min(
            self.lambda_front, self.lambda_rear
        ) < 0:
            raise ValueError(
                f"lambda_front and lambda_rear must be finite and >= 0, got {self.lambda_front}, {self.lambda_rear}"
            )
        if self.feature_width < 1 or self.feature_epochs < 1:
            raise ValueError(
                f"feature_width and feature_epochs must be >= 1, got {self.feature_width}, {self.feature_epochs}"
            )
        if self.feature_train_size is not None and self.feature_train_size < 1:
            raise ValueError(
                f"feature_train_size must be None (whole train split) or >= 1, got {self.feature_train_size}"
            )


def feature_distance(activation: Tensor, target: Tensor, kind: FeatureLoss = "ce") -> Tensor:
    """D(h_E(x~), f) of elf.md section 4.

    ``ce``: cross-entropy over the channel axis with the (unnormalised, non-negative) features as soft
    targets, averaged over every other axis: mean_{n,h,w} -sum_c f log_softmax_c(h), as the reference's
    ``nn.CrossEntropyLoss`` with float targets. ``l2``/``l1``: mean squared / absolute difference.
    ``cos``: 1 - cosine similarity of the whole flattened batch (one scalar, as the reference).
    """
    if activation.shape != target.shape:
        raise ValueError(f"feature shapes differ: activation {tuple(activation.shape)} vs target {tuple(target.shape)}")
    if kind == "ce":
        return F.cross_entropy(activation, target)
    if kind == "l2":
        return F.mse_loss(activation, target)
    if kind == "l1":
        return F.l1_loss(activation, target)
    if kind == "cos":
        return 1.0 - F.cosine_similarity(activation.flatten(), target.flatten(), dim=0)
    raise ValueError(f"feature_loss must be one of {', '.join(FEATURE_LOSSES)}, got {kind!r}")


@torch.no_grad()
def stage_shapes(net: StagedNetwork, info: DatasetInfo) -> list[Shape]:
    """Output shape (without the batch axis) of every stage of ``net`` for ``info``'s images."""
    was_training = net.training
    net.eval()
    device = next(net.parameters()).device
    x = torch.zeros(1, info.channels, *info.image_size, device=device)
    shapes = []
    for stage in net.stages:
        x = stage(x)
        shapes.append(tuple(x.shape[1:]))
    net.train(was_training)
    return shapes


def choose_eval_split(shapes: list[Shape], feature_shape: Shape) -> int:
    """The evaluation network's split: the first stage whose output shape equals the features', else the
    first with the same channels and a spatial size the features can be pooled to, else the first with the
    same spatial size (channels bridged by 1x1 convolutions), else the first with a spatial size the features
    can be pooled to (pooled and bridged)."""

    def poolable(shape: Shape) -> bool:
        return len(shape) == len(feature_shape) and all(s <= f for s, f in zip(shape[1:], feature_shape[1:]))

    rules: list[Callable[[Shape], bool]] = [
        lambda s: s == feature_shape,
        lambda s: s[0] == feature_shape[0] and poolable(s),
        lambda s: s[1:] == feature_shape[1:] and len(s) == len(feature_shape),
        poolable,
    ]
    for rule in rules:
        for index, shape in enumerate(shapes):
            if rule(shape):
                return index
    listing = ", ".join(f"{i}: {s}" for i, s in enumerate(shapes))
    raise ValueError(
        f"no stage of the evaluation network matches the ELF features of shape {feature_shape} "
        f"(stage outputs: {listing}); pass eval_split=<stage> whose spatial size is at most the features', "
        "or change feature_split"
    )


def _bridge(in_channels: int, out_channels: int, ndim: int) -> nn.Module:
    if in_channels == out_channels:
        return nn.Identity()
    return nn.Conv2d(in_channels, out_channels, kernel_size=1) if ndim == 3 else nn.Linear(in_channels, out_channels)


class ELFNetwork(nn.Module):
    """An evaluation network cut after stage ``split``, with the channel bridges to the feature space.

    ``forward`` is the plain network's; in training mode it also keeps the front activation h_E(x~) of
    the batch, which :class:`ELFLoss` consumes, so the front runs once per step.
    """

    def __init__(self, net: StagedNetwork, split: int, front_shape: Shape, feature_shape: Shape, seed: int) -> None:
        super().__init__()
        self.net = net
        self.split = split
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(seed)
            self.to_feature = _bridge(front_shape[0], feature_shape[0], len(front_shape))
            self.from_feature = _bridge(feature_shape[0], front_shape[0], len(front_shape))
        self._front: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        front = self.net.features(x, self.split)
        if self.training:
            self._front = front
        return self.net.logits_from(front, self.split)

    def pop_front(self) -> Tensor:
        """h_E of the last training batch (released after the call)."""
        if self._front is None:
            raise RuntimeError("ELFNetwork.pop_front() needs a forward pass in training mode first")
        front, self._front = self._front, None
        return front

    def logits_from_features(self, features: Tensor) -> Tensor:
        """r_E applied to (bridged) distillation features."""
        return self.net.logits_from(self.from_feature(features), self.split)


class ELFLoss:
    """``lambda_front * D(h_E(x~), f) + lambda_rear * CE(r_E(f), y)`` for :func:`train_classifier`'s
    ``extra_loss`` hook (elf.md section 4); ``features`` are the frozen f, already fitted to E's spatial size."""

    def __init__(self, features: Tensor, train: ImageSet, config: ELFConfig) -> None:
        self.features = features
        self.front_targets = normalized_features(features) if config.feature_target == "normalized" else features
        targets = train.soft_labels if train.soft_labels is not None else train.labels
        self.targets = targets.to(features.device)
        self.config = config

    def __call__(self, net: nn.Module, augmented: Tensor, batch_indices: Tensor) -> Tensor:
        if not isinstance(net, ELFNetwork):
            raise TypeError(f"ELFLoss needs the network wrapped in ELFNetwork, got {type(net).__name__}")
        front = net.pop_front().float()
        features = self.features[batch_indices]
        loss = front.new_zeros(())
        if self.config.lambda_front:
            loss = loss + self.config.lambda_front * feature_distance(
                net.to_feature(front), self.front_targets[batch_indices], self.config.feature_loss
            )
        if self.config.lambda_rear:
            logits = net.logits_from_features(features).float()
            y = self.targets[batch_indices]
            rear = soft_cross_entropy(logits, y) if y.is_floating_point() else F.cross_entropy(logits, y)
            loss = loss + self.config.lambda_rear * rear
        return loss


def normalized_features(features: Tensor) -> Tensor:
    """f divided by its sum over channels (axis 1) at each position: a distribution over channels (ReLU
    features are non-negative; an all-zero position stays zero)."""
    return features / features.sum(dim=1, keepdim=True).clamp_min(1e-12)


def elf_feature_network(
    splits: DatasetSplits, config: ELFConfig, *, device: str | torch.device = "cpu", progress: bool = False
) -> StagedNetwork:
    """The distillation-family network trained on real data: ``config.teacher`` when set (checked to be a
    teacher of this dataset), else the cached stand-in of ``trained_feature_network``."""
    if config.teacher is not None:
        teacher = load_teacher(config.teacher, device=device)
        if teacher.recipe.dataset != splits.info.name:
            raise ValueError(f"the ELF teacher {config.teacher} was trained on {teacher.recipe.dataset}, not "
                             f"{splits.info.name}; pass a teacher of {splits.info.name}")
        return teacher.net
    if config.feature_train_size is not None and config.feature_train_size < len(splits.train):
        per_class, remainder = divmod(config.feature_train_size, splits.info.num_classes)
        if per_class < 1 or remainder:
            raise ValueError(
                f"feature_train_size={config.feature_train_size} must be a positive multiple of the "
                f"{splits.info.num_classes} classes (a class-balanced random subset is drawn)"
            )
        subset = select_coreset(splits, "random", per_class, seed=config.feature_seed)
        splits = DatasetSplits(splits.info, subset, splits.test)
    return trained_feature_network(
        splits, config.feature_model, epochs=config.feature_epochs, seed=config.feature_seed,
        device=device, progress=progress, network_options={"width": config.feature_width},
    )


@torch.no_grad()
def distillation_features(net: StagedNetwork, images: Tensor, split: int, batch_size: int = 500) -> Tensor:
    """f = F(x): activations after stage ``split`` on the un-augmented images, eval mode (elf.md section 3)."""
    net.eval()
    device = next(net.parameters()).device
    batches = (images[i : i + batch_size].to(device) for i in range(0, len(images), batch_size))
    return torch.cat([net.features(batch, split).float() for batch in batches])


def fit_features(features: Tensor, front_shape: Shape) -> Tensor:
    """Average-pool 4-D features to the evaluation split's spatial size (identity when they agree)."""
    if features.ndim != 4 or tuple(features.shape[2:]) == tuple(front_shape[1:]):
        return features
    if any(target > size for target, size in zip(front_shape[1:], features.shape[2:])):
        raise ValueError(
            f"the evaluation split's activation {front_shape} is larger than the ELF features "
            f"{tuple(features.shape[1:])}; pick a deeper eval_split (features are only pooled down)"
        )
    return F.adaptive_avg_pool2d(features, tuple(front_shape[1:]))


def resolve_split(split: int, num_stages: int) -> int:
    """A stage index in ``0..num_stages-1`` (negative counts from the end)."""
    if not -num_stages <= split < num_stages:
        raise ValueError(f"eval_split={split} is out of range for a network with {num_stages} stages")
    return split % num_stages


def evaluate_elf(
    synthetic: ImageSet,
    splits: DatasetSplits,
    config: EvalConfig | None = None,
    elf: ELFConfig | None = None,
    *,
    device: str | torch.device = "cpu",
    progress: bool = False,
    on_model_done: Callable[[int, ModelResult], None] | None = None,
    feature_net: StagedNetwork | None = None,
    checkpoint_dir: str | Path | None = None,
) -> EvalResult:
    """:func:`~distillset.evaluate.evaluate_synthetic` with the ELF objective.

    Model ``i`` starts from the same weights and sees the same batches and augmentations as model ``i``
    of ``evaluate_synthetic`` with the same ``config``, so the two are paired; with both lambdas 0 and
    matching shapes the results are identical. ``feature_net`` skips loading the cached feature network.
    ``checkpoint_dir`` makes it resumable as the plain protocol is (the bridges are part of the wrapped network,
    the loss holds only the frozen features; the ELF settings are part of the checkpoint's identity).
    """
    config = config or EvalConfig()
    elf = elf or ELFConfig()
    device = torch.device(device)
    info = splits.info
    check_compatible(synthetic, info)
    if feature_net is None:
        feature_net = elf_feature_network(splits, elf, device=device, progress=progress)
    feature_net = feature_net.to(device)
    raw_features = distillation_features(feature_net, synthetic.images, elf.feature_split)
    feature_shape = tuple(raw_features.shape[1:])
    shapes = stage_shapes(get_network(config.model, info.channels, info.num_classes, info.image_size, seed=0), info)
    split = resolve_split(elf.eval_split, len(shapes)) if elf.eval_split is not None else choose_eval_split(
        shapes, feature_shape
    )
    front_shape = shapes[split]
    loss = ELFLoss(fit_features(raw_features, front_shape), synthetic, elf)
    elf_record = {
        **asdict(elf), "eval_split": split, "feature_shape": list(feature_shape), "front_shape": list(front_shape)
    }
    if elf.teacher is not None:
        manifest = read_manifest(elf.teacher)
        elf_record.update(teacher_sha256=manifest["sha256"], teacher_test_accuracy=manifest["test_accuracy"])
    result = evaluate_synthetic(
        synthetic, splits.test, info, config, device=device, progress=progress, on_model_done=on_model_done,
        wrap_network=lambda net, seed: ELFNetwork(net, split, front_shape, feature_shape, seed=seed),
        extra_loss=loss, checkpoint_dir=checkpoint_dir,
        variant={"elf": {k: v for k, v in elf_record.items() if k != "teacher"}},  # the teacher by its sha256
    )
    result.config["elf"] = elf_record
    return result
