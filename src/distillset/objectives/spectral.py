"""Kernel spectra and empirical characteristic functions (the math behind SDD / CSDM).

Bochner's theorem: a continuous shift-invariant kernel with ``k(x, x) = 1`` is the Fourier
transform of a probability measure Lambda (its spectral measure),

    k(x, y) = psi(x - y) = E_{t ~ Lambda}[ exp(i t^T (x - y)) ]                      (docs/csdm.md, Eq. 1)

so squared MMD equals a characteristic-function distance (Sriperumbudur et al., JMLR 2010,
Cor. 4; CSDM, arXiv:2603.01698, "spectral distribution distance"):

    MMD_k^2(P, Q) = E_{t ~ Lambda} | phi_P(t) - phi_Q(t) |^2,  phi_P(t) = E_{x~P} exp(i t^T x)  (Eq. 2)

This module holds the kernels (their profile psi and a sampler for Lambda), empirical
characteristic functions, the amplitude-phase split of |phi_P - phi_Q|^2 (Eq. 4) and the exact
V-statistic MMD^2 used as a reference.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from distillset.registry import Registry

FrequencySampler = Callable[[int, int, torch.Generator, torch.device, torch.dtype], Tensor]


@dataclass(frozen=True)
class ShiftInvariantKernel:
    """k(x, y) = profile(||x - y||_p / bandwidth) and the sampler of its unit-bandwidth spectrum.

    ``sample_unit_frequencies(M, D, generator, device, dtype)`` returns M frequencies of shape
    (M, D) from the spectral measure at bandwidth 1; at bandwidth s the measure is that of t / s,
    equivalently the features are divided by s (:func:`empirical_cf` takes pre-scaled features).
    """

    name: str
    distance_p: float
    profile: Callable[[Tensor], Tensor]
    sample_unit_frequencies: FrequencySampler

    def gram(self, x: Tensor, y: Tensor, bandwidth: float | Tensor) -> Tensor:
        """Kernel matrix k(x_i, y_j), shape (len(x), len(y))."""
        return self.profile(torch.cdist(x, y, p=self.distance_p) / bandwidth)

    def median_bandwidth(self, features: Tensor) -> Tensor:
        """Median heuristic (Gretton et al., JMLR 2012): median pairwise ||x_i - x_j||_p."""
        if features.shape[0] < 2:
            raise ValueError(
                f"the median-heuristic bandwidth needs at least 2 samples, got {features.shape[0]}; "
                "pass a fixed float bandwidth instead"
            )
        return torch.pdist(features, p=self.distance_p).median()


SPECTRAL_KERNELS: Registry[ShiftInvariantKernel] = Registry("spectral kernel")


def _register(kernel: ShiftInvariantKernel) -> None:
    SPECTRAL_KERNELS.register(kernel.name)(kernel)


def _sample_gaussian(num: int, dim: int, gen: torch.Generator, device: torch.device, dtype: torch.dtype) -> Tensor:
    return torch.randn(num, dim, generator=gen, device=device, dtype=dtype)


def _sample_cauchy(num: int, dim: int, gen: torch.Generator, device: torch.device, dtype: torch.dtype) -> Tensor:
    return torch.empty(num, dim, device=device, dtype=dtype).cauchy_(generator=gen)


def _matern_profile(nu: float) -> Callable[[Tensor], Tensor]:
    """Matérn-nu correlation for half-integer nu in {1/2, 3/2, 5/2} (Rasmussen & Williams, Eq. 4.16-4.17)."""
    root = math.sqrt(2 * nu)
    polynomial = {
        0.5: lambda u: torch.ones_like(u),
        1.5: lambda u: 1 + u,
        2.5: lambda u: 1 + u + u.pow(2) / 3,
    }[nu]
    return lambda r: polynomial(root * r) * torch.exp(-root * r)


def _matern_sampler(nu: float) -> FrequencySampler:
    """Matérn-nu spectrum = multivariate Student-t with 2*nu degrees of freedom (R&W Eq. 4.15).

    t = z * sqrt(2 nu / g), z ~ N(0, I_D), g ~ chi^2_{2nu}; 2*nu is an integer here, so g is a sum
    of 2*nu squared normals (sampled from the same generator, unlike torch.distributions).
    """
    dof = round(2 * nu)

    def sample(num: int, dim: int, gen: torch.Generator, device: torch.device, dtype: torch.dtype) -> Tensor:
        z = torch.randn(num, dim, generator=gen, device=device, dtype=dtype)
        chi2 = torch.randn(dof, num, 1, generator=gen, device=device, dtype=dtype).pow(2).sum(dim=0)
        return z * torch.sqrt(dof / chi2)

    return sample


_register(ShiftInvariantKernel("gaussian", 2.0, lambda r: torch.exp(-0.5 * r.pow(2)), _sample_gaussian))
_register(ShiftInvariantKernel("laplacian", 1.0, lambda r: torch.exp(-r), _sample_cauchy))
for _name, _nu in (("matern12", 0.5), ("matern32", 1.5), ("matern52", 2.5)):
    _register(ShiftInvariantKernel(_name, 2.0, _matern_profile(_nu), _matern_sampler(_nu)))


def get_spectral_kernel(name: str) -> ShiftInvariantKernel:
    """The registered kernel ``name`` (gaussian, laplacian, matern12, matern32, matern52)."""
    return SPECTRAL_KERNELS.get(name)


def empirical_cf(features: Tensor, frequencies: Tensor) -> Tensor:
    """phi_hat(t_j) = (1/n) sum_i exp(i t_j^T x_i) (docs/csdm.md, Eq. 3); complex, shape (M,).

    ``features`` (n, D), ``frequencies`` (M, D). Cosine and sine are averaged in real arithmetic;
    only the M-vector result is complex.
    """
    projections = features @ frequencies.T
    return torch.complex(torch.cos(projections).mean(dim=0), torch.sin(projections).mean(dim=0))


def cf_distance(cf_p: Tensor, cf_q: Tensor) -> Tensor:
    """|phi_P(t) - phi_Q(t)|^2 per frequency (the integrand of Eq. 2)."""
    return (cf_p - cf_q).abs().pow(2)


def amplitude_phase_terms(cf_p: Tensor, cf_q: Tensor) -> tuple[Tensor, Tensor]:
    """(A, P) per frequency with A + P = |phi_P - phi_Q|^2 (docs/csdm.md, Eq. 4).

    A = (|phi_P| - |phi_Q|)^2;  P = 2 |phi_P||phi_Q| (1 - cos(theta_P - theta_Q))
      = 2 (|phi_P||phi_Q| - Re(phi_P conj(phi_Q))), computed without atan2 as in NCFM and
    clamped at 0 (it is >= 0 by Cauchy-Schwarz; rounding can make it slightly negative).
    The subgradient of |phi| at phi = 0 is 0, so both terms have finite gradients everywhere.
    """
    amp_p, amp_q = cf_p.abs(), cf_q.abs()
    amplitude = (amp_p - amp_q).pow(2)
    phase = (2 * (amp_p * amp_q - (cf_p * cf_q.conj()).real)).clamp(min=0)
    return amplitude, phase


def kernel_mmd2(x: Tensor, y: Tensor, kernel: ShiftInvariantKernel, bandwidth: float | Tensor) -> Tensor:
    """Biased (V-statistic) MMD^2 = mean k(x, x') + mean k(y, y') - 2 mean k(x, y), O((n+m)^2 D)."""
    return (
        kernel.gram(x, x, bandwidth).mean()
        + kernel.gram(y, y, bandwidth).mean()
        - 2 * kernel.gram(x, y, bandwidth).mean()
    )
