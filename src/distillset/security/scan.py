"""Backdoor scan of a distilled set from the set alone (no key, no raw data, no model from the publisher).

Dark Distillation and other gradient-based poisoning rewrite every pixel of the set so that a network's gradient
on it follows a backdoor's; the change is high-frequency, adversarial-noise-like, as triggers and poisoned
images generally are (Zeng et al., "Rethinking the Backdoor Attacks' Triggers: A Frequency Perspective", ICCV
2021). The scan measures that footprint on the set itself:

    r(x) = mean((Laplacian x)^2) / mean((x - mean x)^2)        per image, over the interior pixels

(the discrete 4-neighbour Laplacian, per channel), and the set's score is the median of r over its images. A
smooth natural or distilled image has r near 1-3 (Fashion-MNIST sets of every method in benchmarks/artifacts);
white noise has r = 20. The set is flagged when its score exceeds ``threshold``, which is calibrated on clean
sets that the reported detection rates do not use (docs/security.md, benchmarks/backdoor_scan.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from distillset.data.base import ImageSet

# Thresholds calibrated on clean sets of a dataset (benchmarks/backdoor_scan.py): 1.25 x the largest score of 15
# clean Fashion-MNIST sets (the coresets and CFM sets of benchmarks/artifacts; largest 2.77, k-center IPC 50).
# Image statistics differ between datasets (8x8 digits score 3-10 when clean), so others need their own.
CALIBRATED_THRESHOLDS: dict[str, float] = {"fashion-mnist": 3.5, "fashion-mnist-lt": 3.5}


def calibrated_threshold(dataset: str) -> float:
    if dataset not in CALIBRATED_THRESHOLDS:
        raise ValueError(f"no calibrated scan threshold for dataset '{dataset}' (have: "
                         f"{', '.join(CALIBRATED_THRESHOLDS)}); pass one, e.g. 1.25 x the largest score of clean "
                         "sets of that dataset (docs/security.md)")
    return CALIBRATED_THRESHOLDS[dataset]


@dataclass
class ScanResult:
    flagged: bool
    score: float  # median high-frequency energy ratio over the set's images
    threshold: float
    per_class: list[float]  # the median ratio within each class present (by label)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def high_frequency_ratio(images: Tensor) -> Tensor:
    """Per image: energy of the 4-neighbour Laplacian over the interior, divided by the image's variance
    (averaged over channels). Constant images give 0."""
    x = images.double()
    laplacian = (4 * x[:, :, 1:-1, 1:-1] - x[:, :, :-2, 1:-1] - x[:, :, 2:, 1:-1]
                 - x[:, :, 1:-1, :-2] - x[:, :, 1:-1, 2:])
    variance = (x - x.mean(dim=(2, 3), keepdim=True)).pow(2).mean(dim=(1, 2, 3))
    energy = laplacian.pow(2).mean(dim=(1, 2, 3))
    return torch.where(variance > 0, energy / variance.clamp_min(1e-12), torch.zeros_like(energy))


def scan_set(synthetic: ImageSet, threshold: float) -> ScanResult:
    """Score ``synthetic`` (normalised images, at least 3x3 pixels) and flag it above ``threshold``."""
    if synthetic.images.shape[-1] < 3 or synthetic.images.shape[-2] < 3 or len(synthetic) == 0:
        raise ValueError("the scan needs a non-empty set of images of at least 3x3 pixels")
    ratio = high_frequency_ratio(synthetic.images)
    per_class = [float(ratio[synthetic.labels == c].median()) for c in synthetic.labels.unique().tolist()]
    score = float(ratio.median())
    return ScanResult(score > threshold, score, threshold, per_class)
