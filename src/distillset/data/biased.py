"""Biased training sets: colour bias (CMNIST-DD style) and corruption bias (CCIFAR10-DD style).

Lu et al., "Exploring the Impact of Dataset Bias on Dataset Distillation" (arXiv 2403.16028; code
yaolu-zjut/Biased-DD). Each class ``y`` has a bias attribute (a colour or a corruption type, one per class);
a fraction ``rho`` of each class's training images carries attribute ``y`` (bias-aligned) and the rest the
attributes of the other classes (bias-conflicting), assigned in contiguous blocks as in LfF (Nam et al. 2020):
:func:`bias_attributes`. Every image's attribute is recorded, so evaluation can split test accuracy into
bias-aligned and bias-conflicting images. The test split is built with ``test_rho`` (the paper: 0, every test
image carries another class's attribute) plus an aligned copy of the same images (``rho = 1``).

Colour bias follows the reference exactly (``colors.th`` means, per-image jitter, foreground colouring).
The corruptions are own numpy / scipy / Pillow ports of the CIFAR-10-C functions (Hendrycks & Dietterich 2019)
with their per-level parameters; snow's motion blur (ImageMagick), spatter's edge-based water layer (OpenCV) and
frost's texture photos are replaced by procedural substitutes (docs/biased.md), so images are not
pixel-identical to CCIFAR10-DD.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage
from torch import Tensor

from distillset.data.base import DatasetSplits, ImageSet

# colors.th of yaolu-zjut/Biased-DD: the mean RGB colour of attribute a (rows), in [0, 1].
COLOURS = np.array(
    [
        [0.9837, 0.3125, 0.1686],
        [0.9905, 0.9156, 0.3515],
        [0.6730, 0.4611, 0.5798],
        [0.7833, 0.8316, 0.6013],
        [0.0880, 0.7780, 0.9818],
        [0.3214, 0.9611, 0.4464],
        [0.0246, 0.2357, 0.7587],
        [0.5552, 0.1016, 0.7618],
        [0.2077, 0.3929, 0.0187],
        [0.8337, 0.2024, 0.2669],
    ]
)
# Std of the per-image colour jitter by severity 1..4 (biased_mnist_v1.py): severity 1 jitters most.
COLOUR_JITTER = (0.05, 0.02, 0.01, 0.005)
SEVERITIES = (1, 2, 3, 4)
# The bias seed of the reference generator (seed 42); test and training draws use separate streams.
BIAS_SEED = 42
BIAS_KINDS = ("colour", "corruption")


def check_bias_ratio(rho: float) -> float:
    """``rho`` (the bias-aligned fraction of each class) as a float in [0, 1], else ValueError."""
    if isinstance(rho, bool) or not isinstance(rho, (int, float)) or not 0.0 <= rho <= 1.0:
        raise ValueError(
            f"bias ratio must be the fraction of bias-aligned images per class, a number in [0, 1] (0.1 is unbiased "
            f"with 10 attributes, 0.95 leaves 5 % bias-conflicting images), got {rho!r}"
        )
    return float(rho)


def check_severity(severity: int) -> int:
    if severity not in SEVERITIES:
        raise ValueError(f"bias severity must be one of {SEVERITIES}, got {severity!r}")
    return int(severity)


def bias_attributes(labels: np.ndarray, rho: float, num_attributes: int = 10) -> np.ndarray:
    """LfF's deterministic attribute assignment (``make_attr_labels`` of the reference code).

    For class ``y`` with ``n_y`` images (in dataset order), attribute ``a`` has probability ``rho`` if ``a == y``
    else ``(1 - rho) / (A - 1)``; with milestones ``m(a) = round(n_y * sum_{a' <= a} p(a'))`` the ``i``-th image
    of the class gets the first ``a`` with ``m(a) > i``. Classes must be ``< num_attributes``.
    """
    rho = check_bias_ratio(rho)
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) and (labels.min() < 0 or labels.max() >= num_attributes):
        raise ValueError(f"labels span {labels.min()}..{labels.max()}; the bias needs one attribute per class "
                         f"(num_attributes={num_attributes})")
    attributes = np.empty_like(labels)
    for y in np.unique(labels):
        members = np.flatnonzero(labels == y)
        p = np.full(num_attributes, (1.0 - rho) / (num_attributes - 1))
        p[y] = rho
        milestones = np.round(len(members) * np.cumsum(p)).astype(np.int64)
        milestones[-1] = len(members)  # float round-off must not leave the last images without an attribute
        attributes[members] = np.searchsorted(milestones, np.arange(len(members)), side="right")
    return attributes


def colour_bias(images: np.ndarray, attributes: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Colour grayscale ``uint8 (N, 1, H, W)`` images by attribute: ``uint8 (N, 3, H, W)``.

    Per image one colour ``c = clip(mu_a + sigma_s * n, 0, 1)``, ``n ~ N(0, I_3)``; the stroke is ``c * x``
    truncated to uint8 (the reference casts), so the black background stays exactly 0.
    """
    severity = check_severity(severity)
    if images.ndim != 4 or images.shape[1] != 1 or images.dtype != np.uint8:
        raise ValueError(f"colour bias needs grayscale uint8 images (N, 1, H, W), got {images.dtype} {images.shape}")
    colours = np.clip(COLOURS[attributes] + COLOUR_JITTER[severity - 1] * rng.standard_normal((len(images), 3)), 0, 1)
    out = np.empty((len(images), 3, *images.shape[2:]), dtype=np.uint8)
    for start in range(0, len(images), 4096):  # float32 chunks keep the peak memory small
        chunk = slice(start, start + 4096)
        out[chunk] = (colours[chunk, :, None, None].astype(np.float32) * images[chunk].astype(np.float32)).astype(
            np.uint8)
    return out


# ----------------------------------------------------------------------------------------- corruptions
# Each takes an RGB float image (H, W, 3) in [0, 1], a CIFAR-10-C level 1..5 and a generator; returns (H, W, 3).


def _plasma_fractal(size: int, decay: float, rng: np.random.Generator) -> np.ndarray:
    """Diamond-square height map of side ``size`` (a power of two), scaled to [0, 1] (CIFAR-10-C's fog)."""
    grid = np.zeros((size, size))
    step, wibble = size, 100.0
    while step >= 2:
        half = step // 2
        corners = grid[0:size:step, 0:size:step]
        square = corners + np.roll(corners, -1, axis=0)
        square = square + np.roll(square, -1, axis=1)
        grid[half:size:step, half:size:step] = square / 4 + wibble * rng.uniform(-wibble, wibble, square.shape)
        centres = grid[half:size:step, half:size:step]
        corners = grid[0:size:step, 0:size:step]
        left = centres + np.roll(centres, 1, axis=0) + corners + np.roll(corners, -1, axis=1)
        grid[0:size:step, half:size:step] = left / 4 + wibble * rng.uniform(-wibble, wibble, left.shape)
        top = centres + np.roll(centres, 1, axis=1) + corners + np.roll(corners, -1, axis=0)
        grid[half:size:step, 0:size:step] = top / 4 + wibble * rng.uniform(-wibble, wibble, top.shape)
        step, wibble = half, wibble / decay
    grid -= grid.min()
    return grid / grid.max()


def _clipped_zoom(layer: np.ndarray, factor: float) -> np.ndarray:
    """Zoom the centre of a 2-D layer by ``factor`` and crop back to its size."""
    h, w = layer.shape
    ch, cw = int(np.ceil(h / factor)), int(np.ceil(w / factor))
    top, left = (h - ch) // 2, (w - cw) // 2
    zoomed = ndimage.zoom(layer[top : top + ch, left : left + cw], factor, order=1)
    th, tw = (zoomed.shape[0] - h) // 2, (zoomed.shape[1] - w) // 2
    return zoomed[th : th + h, tw : tw + w]


def _hsv_shift(x: np.ndarray, channel: int, scale: float, shift: float) -> np.ndarray:
    from matplotlib.colors import hsv_to_rgb, rgb_to_hsv

    hsv = rgb_to_hsv(x)
    hsv[..., channel] = np.clip(hsv[..., channel] * scale + shift, 0, 1)
    return hsv_to_rgb(hsv)


def _motion_kernel(length: int, sigma: float, angle_deg: float) -> np.ndarray:
    """A one-sided line kernel with Gaussian fall-off (a stand-in for ImageMagick's motion blur)."""
    size = 2 * length + 1
    kernel = np.zeros((size, size))
    angle = np.deg2rad(angle_deg)
    for t in range(length + 1):
        r, c = length - t * np.sin(angle), length + t * np.cos(angle)
        kernel[int(round(r)), int(round(c))] += np.exp(-(t**2) / (2 * sigma**2))
    return kernel / kernel.sum()


def _gray(x: np.ndarray) -> np.ndarray:
    return x @ np.array([0.299, 0.587, 0.114])


def snow(x: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    loc, scale, zoom, threshold, radius, sigma, keep = [
        (0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)][level - 1]
    layer = _clipped_zoom(rng.normal(loc, scale, x.shape[:2]), zoom)
    layer[layer < threshold] = 0
    kernel = _motion_kernel(radius, sigma, rng.uniform(-135, -45))
    layer = ndimage.convolve(np.clip(layer, 0, 1), kernel, mode="constant")[..., None]
    x = keep * x + (1 - keep) * np.maximum(x, _gray(x)[..., None] * 1.5 + 0.5)
    return np.clip(x + layer + np.rot90(layer, k=2), 0, 1)


def _frost_texture(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Procedural ice: ridged multi-scale noise (thin bright veins) tinted pale blue, in [0, 1], ``(H, W, 3)``.
    Replaces the six frost photos of CIFAR-10-C."""
    ridges = np.zeros(shape)
    for octave, weight in ((4, 0.5), (8, 0.3), (16, 0.2)):
        noise = ndimage.zoom(rng.standard_normal((octave, octave)), (shape[0] / octave, shape[1] / octave), order=3)
        ridges += weight * (1 - np.abs(np.tanh(2 * noise[: shape[0], : shape[1]])))
    ridges = (ridges - ridges.min()) / (np.ptp(ridges) + 1e-12)
    return np.clip(ridges[..., None] ** 2 * np.array([0.85, 0.93, 1.0]) + 0.15 * rng.random(shape)[..., None], 0, 1)


def frost(x: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    keep, amount = [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)][level - 1]
    return np.clip(keep * x + amount * _frost_texture(x.shape[:2], rng), 0, 1)


def fog(x: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    amount, decay = [(0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)][level - 1]
    size = 1 << int(np.ceil(np.log2(max(x.shape[:2]))))
    peak = x.max()
    x = x + amount * _plasma_fractal(size, decay, rng)[: x.shape[0], : x.shape[1], None]
    return np.clip(x * peak / (peak + amount), 0, 1)


def brightness(x: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    return np.clip(_hsv_shift(x, 2, 1.0, (0.05, 0.1, 0.15, 0.2, 0.3)[level - 1]), 0, 1)


def contrast(x: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    factor = (0.75, 0.5, 0.4, 0.3, 0.15)[level - 1]
    means = x.mean(axis=(0, 1), keepdims=True)
    return np.clip((x - means) * factor + means, 0, 1)


def spatter(x: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    """Water drops (levels 1-3, pale turquoise) or mud (levels 4-5, brown). The water layer is the blurred,
    thresholded liquid mask (CIFAR-10-C derives it from Canny edges and a distance transform)."""
    loc, scale, blur, threshold, strength, mud = [
        (0.62, 0.1, 0.7, 0.7, 0.5, 0), (0.65, 0.1, 0.8, 0.7, 0.5, 0), (0.65, 0.3, 1, 0.69, 0.5, 0),
        (0.65, 0.1, 0.7, 0.69, 0.6, 1), (0.65, 0.1, 0.5, 0.68, 0.6, 1)][level - 1]
    liquid = ndimage.gaussian_filter(rng.normal(loc, scale, x.shape[:2]), blur)
    liquid[liquid < threshold] = 0
    if not mud:
        mask = ndimage.gaussian_filter(liquid, 1.0)
        mask = strength * mask / (mask.max() + 1e-12)
        return np.clip(x + mask[..., None] * np.array([175, 238, 238]) / 255, 0, 1)
    mask = ndimage.gaussian_filter((liquid > threshold).astype(float), strength)
    mask[mask < 0.8] = 0
    return np.clip(x * (1 - mask[..., None]) + mask[..., None] * np.array([63, 42, 20]) / 255, 0, 1)


def elastic(x: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    """A random affine warp of three anchor points, then a smooth random displacement field."""
    size = min(x.shape[:2])
    alpha, sigma, affine = (size * v for v in [(0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06),
                                               (0.1, 0.04, 0.05), (0.1, 0.03, 0.03)][level - 1])
    centre, side = np.array(x.shape[:2], dtype=float) // 2, size // 3
    src = np.array([centre + side, [centre[0] + side, centre[1] - side], centre - side])
    dst = src + rng.uniform(-affine, affine, src.shape)
    # output point p samples the input at A p + b, the affine map taking dst onto src (as warpAffine's inverse)
    solution = np.linalg.solve(np.c_[dst, np.ones(3)], src)
    matrix, offset = solution[:2].T, solution[2]
    warped = np.stack([ndimage.affine_transform(x[..., k], matrix, offset, order=1, mode="mirror")
                       for k in range(3)], axis=-1)
    dy, dx = (ndimage.gaussian_filter(rng.uniform(-1, 1, x.shape[:2]), sigma, mode="reflect", truncate=3) * alpha
              for _ in range(2))
    rows, cols = np.meshgrid(np.arange(x.shape[0]), np.arange(x.shape[1]), indexing="ij")
    coords = [rows + dy, cols + dx]
    return np.clip(np.stack([ndimage.map_coordinates(warped[..., k], coords, order=1, mode="reflect")
                             for k in range(3)], axis=-1), 0, 1)


def _pil(x: np.ndarray) -> Image.Image:
    return Image.fromarray((np.clip(x, 0, 1) * 255).round().astype(np.uint8))


def jpeg(x: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    buffer = io.BytesIO()
    _pil(x).save(buffer, "JPEG", quality=(80, 65, 58, 50, 40)[level - 1])
    return np.asarray(Image.open(buffer), dtype=np.float64) / 255


def pixelate(x: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    factor = (0.95, 0.9, 0.85, 0.75, 0.65)[level - 1]
    h, w = x.shape[:2]
    small = _pil(x).resize((int(w * factor), int(h * factor)), Image.BOX)
    return np.asarray(small.resize((w, h), Image.BOX), dtype=np.float64) / 255


def saturate(x: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    scale, shift = [(0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)][level - 1]
    return np.clip(_hsv_shift(x, 1, scale, shift), 0, 1)


Corruption = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]
# Attribute index -> corruption, the order of corrupted_cifar10_protocol.py.
CORRUPTIONS: dict[str, Corruption] = {
    "snow": snow, "frost": frost, "fog": fog, "brightness": brightness, "contrast": contrast,
    "spatter": spatter, "elastic": elastic, "jpeg": jpeg, "pixelate": pixelate, "saturate": saturate,
}


def corruption_bias(images: np.ndarray, attributes: np.ndarray, severity: int,
                    rng: np.random.Generator) -> np.ndarray:
    """Corrupt RGB ``uint8 (N, 3, H, W)`` images by attribute (index into :data:`CORRUPTIONS`) at CIFAR-10-C
    level ``severity + 1`` (the reference's mapping: dataset severity 1..4 -> levels 2..5)."""
    severity = check_severity(severity)
    if images.ndim != 4 or images.shape[1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"corruption bias needs RGB uint8 images (N, 3, H, W), got {images.dtype} {images.shape}")
    functions = list(CORRUPTIONS.values())
    out = np.empty_like(images)
    for i, (image, attribute) in enumerate(zip(images, attributes, strict=True)):
        corrupted = functions[attribute](image.transpose(1, 2, 0) / 255.0, severity + 1, rng)
        out[i] = (np.clip(corrupted, 0, 1) * 255).astype(np.uint8).transpose(2, 0, 1)
    return out


BIAS_FUNCTIONS: dict[str, Callable[[np.ndarray, np.ndarray, int, np.random.Generator], np.ndarray]] = {
    "colour": colour_bias, "corruption": corruption_bias}
ATTRIBUTE_NAMES: dict[str, tuple[str, ...]] = {
    "colour": tuple(f"colour{a}" for a in range(len(COLOURS))), "corruption": tuple(CORRUPTIONS)}


@dataclass(frozen=True)
class BiasedArrays:
    """Biased uint8 images with each image's attribute; ``aligned_test_images`` are the test images with their
    own class's attribute."""

    train_images: np.ndarray
    train_attributes: np.ndarray
    test_images: np.ndarray
    test_attributes: np.ndarray
    aligned_test_images: np.ndarray


def make_biased_arrays(
    kind: str,
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    rho: float,
    severity: int = 2,
    *,
    test_rho: float = 0.0,
    seed: int = BIAS_SEED,
) -> BiasedArrays:
    """Apply the ``kind`` bias (``colour`` or ``corruption``): training attributes with ratio ``rho``, test
    attributes with ``test_rho``, and the aligned copy of the test images. Test, aligned-test and training draws
    come from separate streams of ``seed``, so the test split is the same whatever ``rho``."""
    if kind not in BIAS_FUNCTIONS:
        raise ValueError(f"unknown bias kind {kind!r}; choose one of {', '.join(BIAS_KINDS)}")
    apply = BIAS_FUNCTIONS[kind]
    rho, test_rho, severity = check_bias_ratio(rho), check_bias_ratio(test_rho), check_severity(severity)
    num_attributes = len(ATTRIBUTE_NAMES[kind])
    train_attributes = bias_attributes(train_labels, rho, num_attributes)
    test_attributes = bias_attributes(test_labels, test_rho, num_attributes)
    return BiasedArrays(
        apply(train_images, train_attributes, severity, np.random.default_rng([seed, 0])),
        train_attributes,
        apply(test_images, test_attributes, severity, np.random.default_rng([seed, 1])),
        test_attributes,
        apply(test_images, np.asarray(test_labels, dtype=np.int64), severity, np.random.default_rng([seed, 2])),
    )


@dataclass(frozen=True)
class BiasSetting:
    """How a biased set was built (recorded with results)."""

    kind: str  # "colour" | "corruption"
    rho: float  # bias-aligned fraction of each training class
    severity: int
    test_rho: float = 0.0
    seed: int = BIAS_SEED


@dataclass
class BiasedSplits(DatasetSplits):
    """A biased dataset: the usual splits plus each image's bias attribute and an aligned copy of the test split
    (the same images, each with its own class's attribute). Image ``i`` is bias-aligned when
    ``attributes[i] == labels[i]``."""

    train_attributes: Tensor
    test_attributes: Tensor
    aligned_test: ImageSet
    bias: BiasSetting

    def aligned_mask(self, split: str = "train") -> Tensor:
        """Boolean mask of the bias-aligned images of ``split`` (``train`` or ``test``)."""
        images, attributes = (self.train, self.train_attributes) if split == "train" else (self.test,
                                                                                          self.test_attributes)
        return attributes == images.labels
