"""Evaluation under the Minimax protocol (:mod:`distillset.training.minimax`) over several fresh networks."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from distillset.data.base import DatasetInfo, ImageSet
from distillset.evaluate.protocol import check_compatible
from distillset.nets import get_network
from distillset.training.minimax import MinimaxConfig, MinimaxModelResult, train_minimax


def _resized(images: ImageSet, size: int) -> ImageSet:
    resized = F.interpolate(images.images, size=(size, size), mode="bilinear", align_corners=False)
    return ImageSet(resized, images.labels)


@dataclass
class MinimaxResult:
    config: dict[str, Any]
    models: list[MinimaxModelResult] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        best = torch.tensor([m.best for m in self.models], dtype=torch.float64)
        final = torch.tensor([m.final for m in self.models], dtype=torch.float64)
        return {
            "config": self.config,
            "accuracy_reported": "best over periodic test evaluations (Minimax protocol); final in final_*",
            "mean": float(best.mean()), "std": float(best.std(unbiased=False)), "n": len(self.models),
            "accuracies": best.tolist(),
            "final_mean": float(final.mean()), "final_std": float(final.std(unbiased=False)),
            "final_accuracies": final.tolist(),
            "train_seconds": [m.train_seconds for m in self.models],
        }


def evaluate_minimax(synthetic: ImageSet, test: ImageSet, info: DatasetInfo, config: MinimaxConfig, *,
                     device: str | torch.device = "cpu") -> MinimaxResult:
    """Train ``config.num_models`` networks (model ``i`` seeded ``seed * 1000 + i``) on ``synthetic`` with hard
    labels (soft labels are ignored, as the protocol uses none) and test each on ``test``."""
    device = torch.device(device)
    check_compatible(synthetic, info)
    train = ImageSet(synthetic.images, synthetic.labels)
    size = config.image_size or info.image_size[0]
    if config.image_size:
        train, test = _resized(train, size), _resized(test, size)
    result = MinimaxResult(config=asdict(config))
    for index in range(config.num_models):
        seed = config.seed * 1000 + index
        net = get_network(config.model, info.channels, info.num_classes, size, seed=seed).to(device)
        result.models.append(train_minimax(net, train, test, info.num_classes, config,
                                           generator=torch.Generator().manual_seed(seed), device=device))
    return result
