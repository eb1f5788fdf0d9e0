"""SDD and CSDM objectives (Wu et al., "Towards Principled Dataset Distillation: A Spectral
Distribution Perspective", arXiv:2603.01698). Equation numbers refer to docs/csdm.md.

Per class c, real and synthetic features are (optionally) L2-normalised and divided by a
bandwidth s_c; M frequencies t_j are drawn once per step from the kernel's unit spectrum and
shared by all classes; the empirical characteristic functions (Eq. 3) are compared per frequency:

- ``sdd``:  L_c = mean_j |phi_r(t_j) - phi_s(t_j)|^2                    (Eq. 2, = MMD_k^2 estimate)
- ``csdm``: L_c = mean_j 2 [alpha_c A_c(t_j) + (1 - alpha_c) P_c(t_j)]    (Eq. 5)

with the amplitude/phase terms A, P of Eq. 4 and alpha_c from the class's real-image count
(Eq. 6: tail classes get less amplitude weight, i.e. more phase / realism weight). The total is
``scale * sum_c L_c``.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from distillset.objectives import OBJECTIVES
from distillset.objectives.base import MatchingContext, MatchingObjective
from distillset.objectives.spectral import (
    amplitude_phase_terms,
    cf_distance,
    empirical_cf,
    get_spectral_kernel,
)
from distillset.registry import Registry

DEFAULT_SCALE = 250.0  # see docs/csdm.md, "Loss scale": matches DM's image-gradient norm on ConvNet-3


def log_count_alpha(class_sizes: Tensor, alpha_head: float, alpha_tail: float) -> Tensor:
    """Eq. 6: alpha_c = alpha_tail + (alpha_head - alpha_tail) * log(n_c/n_min) / log(n_max/n_min).

    The largest class gets ``alpha_head``, the smallest ``alpha_tail``; on a balanced dataset
    (n_max = n_min) every class gets the midpoint.
    """
    log_sizes = class_sizes.double().log()
    log_range = log_sizes.max() - log_sizes.min()
    if log_range == 0:
        position = torch.full_like(log_sizes, 0.5)
    else:
        position = (log_sizes - log_sizes.min()) / log_range
    return alpha_tail + (alpha_head - alpha_tail) * position


def uniform_alpha(class_sizes: Tensor, alpha_head: float, alpha_tail: float) -> Tensor:
    """alpha_c = 1/2 for every class: Eq. 5 then equals plain SDD (Eq. 2) exactly."""
    return torch.full(class_sizes.shape, 0.5, dtype=torch.float64)


AmplitudeWeighting = Callable[[Tensor, float, float], Tensor]
AMPLITUDE_WEIGHTINGS: Registry[AmplitudeWeighting] = Registry("amplitude weighting")
AMPLITUDE_WEIGHTINGS.register("log-count")(log_count_alpha)
AMPLITUDE_WEIGHTINGS.register("uniform")(uniform_alpha)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


class SpectralMatchingObjective(MatchingObjective):
    """Shared machinery of ``sdd`` and ``csdm``: features -> scaled CFs -> per-frequency terms.

    Args:
        kernel: name in ``SPECTRAL_KERNELS`` (gaussian, laplacian, matern12/32/52).
        bandwidth: ``"median"`` (median pairwise distance of the class's real features, per class
            and step; of its real and synthetic features together where the class has one real image)
            or a positive float (fixed s).
        num_frequencies: M, frequencies per step (shared by all classes of the step).
        normalize_features: L2-normalise each feature vector first (as NCFM does).
        scale: multiplies the summed loss (see docs/csdm.md for how the default was chosen).
        seed: seeds the objective's own generator, used when ``context.generator`` is None.
    """

    def __init__(
        self,
        kernel: str = "gaussian",
        bandwidth: float | str = "median",
        num_frequencies: int = 4096,
        normalize_features: bool = True,
        scale: float = DEFAULT_SCALE,
        seed: int = 0,
    ) -> None:
        self.kernel = get_spectral_kernel(kernel)
        if isinstance(bandwidth, str):
            _require(bandwidth == "median", f"bandwidth must be 'median' or a positive float, got '{bandwidth}'")
        else:
            _require(bandwidth > 0, f"bandwidth must be positive, got {bandwidth}")
        _require(
            isinstance(num_frequencies, int) and num_frequencies >= 1,
            f"num_frequencies must be a positive int, got {num_frequencies!r}",
        )
        _require(scale > 0, f"scale must be positive, got {scale}")
        self.bandwidth = bandwidth
        self.num_frequencies = num_frequencies
        self.normalize_features = normalize_features
        self.scale = float(scale)
        self.seed = seed
        self._generator = torch.Generator().manual_seed(seed)

    def sample_frequencies(self, dim: int, device: torch.device, context: MatchingContext) -> Tensor:
        """M unit-bandwidth float32 frequencies, shape (M, dim), on ``device``.

        One 62-bit seed is drawn from ``context.generator`` (or the objective's own generator) and
        seeds a generator on the features' device, so a CPU generator drives GPU sampling without
        a host-to-device copy of the (M, D) matrix, and runs are reproducible.
        """
        source = context.generator if context.generator is not None else self._generator
        step_seed = int(torch.randint(2**62, (1,), generator=source, device=source.device))
        local = torch.Generator(device=device).manual_seed(step_seed)
        return self.kernel.sample_unit_frequencies(self.num_frequencies, dim, local, device, torch.float32)

    def _scaled(self, real: Tensor, synthetic: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Normalise, then divide both sets by the bandwidth (kernel at s on x == kernel at 1 on x/s)."""
        real, synthetic = real.float(), synthetic.float()
        if self.normalize_features:
            real, synthetic = F.normalize(real, dim=1), F.normalize(synthetic, dim=1)
        if self.bandwidth == "median":
            # a long-tailed class can have a single real image: its median then pools the synthetic features
            pool = real if real.shape[0] > 1 else torch.cat([real, synthetic])
            bandwidth = self.kernel.median_bandwidth(pool.detach()).clamp(min=torch.finfo(real.dtype).eps)
        else:
            bandwidth = real.new_tensor(self.bandwidth)
        return real / bandwidth, synthetic / bandwidth, bandwidth

    def loss(
        self,
        real: Sequence[Tensor],
        synthetic: Sequence[Tensor],
        classes: Sequence[int],
        context: MatchingContext,
    ) -> Tensor:
        """scale * sum_c mean_j ell_c(t_j), with one frequency draw shared by the step's classes."""
        self.check_batches(real, synthetic, classes)
        for r, s, c in zip(real, synthetic, classes, strict=True):
            _require(
                r.ndim == 2 and s.ndim == 2 and r.shape[1] == s.shape[1] and r.shape[0] > 0 and s.shape[0] > 0,
                f"class {c}: expected non-empty (B, D) real and (IPC, D) synthetic features with the same D, "
                f"got {tuple(r.shape)} and {tuple(s.shape)}",
            )
        frequencies = self.sample_frequencies(synthetic[0].shape[1], synthetic[0].device, context)
        total = synthetic[0].new_zeros((), dtype=torch.float32)
        diagnostics: dict[str, Tensor] = {}
        for r, s, c in zip(real, synthetic, classes, strict=True):
            scaled_real, scaled_syn, bandwidth = self._scaled(r, s)
            terms = self.frequency_terms(
                empirical_cf(scaled_real, frequencies), empirical_cf(scaled_syn, frequencies), c, context
            )
            total = total + terms.pop("loss").mean()
            terms["bandwidth"] = bandwidth
            for key, value in terms.items():
                diagnostics[key] = diagnostics.get(key, 0) + value.detach().mean() / len(classes)
        for key, value in diagnostics.items():
            context.log[f"{self.name}/{key}"] = float(value)
        return self.scale * total

    @abstractmethod
    def frequency_terms(
        self, real_cf: Tensor, synthetic_cf: Tensor, class_index: int, context: MatchingContext
    ) -> dict[str, Tensor]:
        """Per-frequency terms of one class; key ``"loss"`` is averaged into the loss, the
        others are logged (class-averaged) as ``"<name>/<key>"``."""


@OBJECTIVES.register("sdd")
class SpectralDistributionDistance(SpectralMatchingObjective):
    """Plain SDD (Eq. 2): L_c = mean_j |phi_r(t_j) - phi_s(t_j)|^2, a Monte-Carlo MMD_k^2."""

    name = "sdd"

    def frequency_terms(
        self, real_cf: Tensor, synthetic_cf: Tensor, class_index: int, context: MatchingContext
    ) -> dict[str, Tensor]:
        return {"loss": cf_distance(real_cf, synthetic_cf)}


@OBJECTIVES.register("csdm")
class ClassAwareSpectralDistributionMatching(SpectralMatchingObjective):
    """CSDM (Eq. 5): L_c = mean_j 2 [alpha_c A_c(t_j) + (1 - alpha_c) P_c(t_j)].

    Args (besides those of :class:`SpectralMatchingObjective`):
        weighting: name in ``AMPLITUDE_WEIGHTINGS``: ``"log-count"`` (Eq. 6) or ``"uniform"``.
        alpha_head: amplitude weight of the largest class, in (0, 1).
        alpha_tail: amplitude weight of the smallest class, in (0, 1); below ``alpha_head`` gives
            tail classes more phase (realism) weight, the arXiv version's reading.
    The factor 2 makes alpha = 1/2 reproduce SDD exactly.
    """

    name = "csdm"

    def __init__(
        self,
        weighting: str = "log-count",
        alpha_head: float = 0.7,
        alpha_tail: float = 0.3,
        **spectral_params: Any,
    ) -> None:
        super().__init__(**spectral_params)
        self.weighting_rule = AMPLITUDE_WEIGHTINGS.get(weighting)
        self.weighting = weighting
        for label, value in (("alpha_head", alpha_head), ("alpha_tail", alpha_tail)):
            _require(
                0 < value < 1,
                f"{label} must lie strictly between 0 and 1 (at 0 or 1 the loss ignores phase or "
                f"amplitude and stops being a distance), got {value}",
            )
        self.alpha_head = alpha_head
        self.alpha_tail = alpha_tail

    def amplitude_weights(self, class_sizes: Tensor) -> Tensor:
        """alpha_c for every class (float64, shape (num_classes,)) from the real-image counts."""
        _require(
            class_sizes.ndim == 1 and bool((class_sizes > 0).all()),
            f"class_sizes must be a 1-D tensor of positive counts, got {class_sizes.tolist()}",
        )
        return self.weighting_rule(class_sizes, self.alpha_head, self.alpha_tail)

    def frequency_terms(
        self, real_cf: Tensor, synthetic_cf: Tensor, class_index: int, context: MatchingContext
    ) -> dict[str, Tensor]:
        _require(
            0 <= class_index < len(context.class_sizes),
            f"class {class_index} has no entry in context.class_sizes (length {len(context.class_sizes)})",
        )
        alpha = float(self.amplitude_weights(context.class_sizes)[class_index])
        amplitude, phase = amplitude_phase_terms(real_cf, synthetic_cf)
        return {"loss": 2 * (alpha * amplitude + (1 - alpha) * phase), "amplitude": amplitude, "phase": phase}
