"""Feature networks: a network trained on the full real data (coreset selection, ELF, fair metrics), cached on
disk."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from distillset.data.base import DatasetSplits
from distillset.io import atomic_save_tensors
from distillset.nets import get_network
from distillset.runtime import default_compile, resolve_precision
from distillset.training.classifier import EvalConfig, train_classifier


def cache_dir() -> Path:
    """``$DISTILLSET_CACHE`` or ``~/.cache/distillset``."""
    return Path(os.environ.get("DISTILLSET_CACHE", Path.home() / ".cache" / "distillset"))


def trained_feature_network(
    splits: DatasetSplits,
    model: str = "convnet3",
    *,
    epochs: int = 3,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
    network_options: Mapping[str, Any] | None = None,
    precision: str = "auto",
    compile: bool | None = None,
) -> nn.Module:
    """A ``model`` trained on the whole real train split (SGD 0.01, momentum 0.9, no augmentation).

    ``network_options`` go to :func:`get_network` (e.g. ``{"width": 512}`` for ELF's feature network).
    ``precision`` and ``compile`` (default: :func:`~distillset.runtime.default_compile`) are those of
    :class:`EvalConfig`. The weights are cached under :func:`cache_dir` keyed by dataset, size, model, options,
    epochs, seed and, for bf16 training, the precision.
    """
    info = splits.info
    options = dict(network_options or {})
    net = get_network(model, info.channels, info.num_classes, info.image_size, seed=seed, **options)
    tags = "".join(f"-{name}{value}" for name, value in sorted(options.items()))
    precision = resolve_precision(precision, device)
    key = f"{info.name}-n{len(splits.train)}-{model}{tags}-e{epochs}-s{seed}" + ("-bf16" if precision == "bf16" else "")
    path = cache_dir() / "feature-nets" / f"{key}.safetensors"
    if path.is_file():
        net.load_state_dict(load_file(path))
        return net.to(device).eval()
    # The protocol's loop runs epochs + 1 epochs and decays lr half-way; epochs - 1 gives `epochs` passes.
    config = EvalConfig(model=model, epochs=max(epochs - 1, 0), dsa=False, lr=0.01, precision=precision,
                        compile=default_compile() if compile is None else compile)
    train_classifier(
        net.to(device), splits.train, config,
        generator=torch.Generator().manual_seed(seed), device=torch.device(device), progress=progress,
    )
    atomic_save_tensors(path, net.state_dict())
    return net.eval()


@torch.inference_mode()
def extract_features(net: nn.Module, images: Tensor, batch_size: int = 1000) -> Tensor:
    """``net.embed`` features of ``images`` (no augmentation), on the CPU."""
    net.eval()
    device = next(net.parameters()).device
    return torch.cat([net.embed(images[i : i + batch_size].to(device)).float().cpu()
                      for i in range(0, len(images), batch_size)])
