"""Bundled analytic problems: exact Gaussian-mixture data with known denoisers.

Each problem is built deterministically from a fixed seed, so its numbers are
comparable across runs and machines.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from .analytic import GaussianMixture, JointGaussianMixture
from .registry import Registry

__all__ = [
    "AnalyticProblem",
    "PROBLEMS",
    "make_problem",
    "ConditionalProblem",
    "CONDITIONAL_PROBLEMS",
    "make_conditional_problem",
]


@dataclass
class AnalyticProblem:
    name: str
    description: str
    model: GaussianMixture  # float64
    num_samples: int  # default sample count for benchmarks

    @property
    def dim(self) -> int:
        return self.model.dim


PROBLEMS: Registry[Callable[[], AnalyticProblem]] = Registry("problem")


def _random_rotation(d: int, g: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))


def _log_uniform(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return torch.exp(math.log(lo) + torch.rand(n, generator=g, dtype=torch.float64) * math.log(hi / lo))


@PROBLEMS.register("ring")
def ring(modes: int = 8, radius: float = 1.0, std: float = 0.03) -> AnalyticProblem:
    """A sharp 2-D ring: ``modes`` equal isotropic Gaussians of std ``std`` on a circle."""
    angles = torch.arange(modes, dtype=torch.float64) * (2 * math.pi / modes)
    means = radius * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    covs = torch.full((modes, 2), std**2, dtype=torch.float64)
    model = GaussianMixture(torch.ones(modes, dtype=torch.float64), means, covs)
    return AnalyticProblem("ring", f"{modes} modes of std {std} on a 2-D circle of radius {radius}", model, 4000)


@PROBLEMS.register("gmm64")
def gmm64(components: int = 8, dim: int = 64, seed: int = 64) -> AnalyticProblem:
    """A mixture in 64-D: unequal weights, spread means, full anisotropic covariances
    (random rotations, eigenvalues log-uniform in [1e-3, 0.3])."""
    g = torch.Generator().manual_seed(seed)
    weights = 0.5 + torch.rand(components, generator=g, dtype=torch.float64)
    means = torch.randn(components, dim, generator=g, dtype=torch.float64) / math.sqrt(dim) * 3.0
    covs = []
    for _ in range(components):
        q = _random_rotation(dim, g)
        covs.append(q @ torch.diag(_log_uniform(dim, 1e-3, 0.3, g)) @ q.T)
    model = GaussianMixture(weights, means, torch.stack(covs))
    return AnalyticProblem("gmm64", f"{components} full-covariance Gaussians in {dim}-D", model, 1000)


@PROBLEMS.register("gauss16")
def gauss16(dim: int = 16, seed: int = 16) -> AnalyticProblem:
    """One anisotropic Gaussian in 16-D (eigenvalues log-uniform in [1e-3, 1]): its ODE flow is closed form."""
    g = torch.Generator().manual_seed(seed)
    q = _random_rotation(dim, g)
    cov = q @ torch.diag(_log_uniform(dim, 1e-3, 1.0, g)) @ q.T
    mean = 0.3 * torch.randn(dim, generator=g, dtype=torch.float64)
    return AnalyticProblem("gauss16", f"one anisotropic Gaussian in {dim}-D", GaussianMixture.gaussian(mean, cov), 1000)


def make_problem(name: str) -> AnalyticProblem:
    return PROBLEMS.get(name)()


@dataclass
class ConditionalProblem:
    """Data x_0 and a noisy observation y, jointly a Gaussian mixture: the exact conditional (OUVE) case.

    Samplers work on the residual u = x - y with the exact denoiser of p(u_0 | y); x = y + u at the end.
    """

    name: str
    description: str
    joint: JointGaussianMixture
    num_samples: int

    @property
    def dim(self) -> int:
        return self.joint.dim


CONDITIONAL_PROBLEMS: Registry[Callable[[], ConditionalProblem]] = Registry("conditional problem")


@CONDITIONAL_PROBLEMS.register("ouve-gmm")
def ouve_gmm(dim: int = 16, components: int = 4, seed: int = 7) -> ConditionalProblem:
    """Speech-enhancement stand-in: clean data a 4-component mixture in 16-D with anisotropic spectra,
    y = x_0 + coloured noise (variances 0.02-0.2), SNR about 5 dB."""
    g = torch.Generator().manual_seed(seed)
    weights = 0.5 + torch.rand(components, generator=g, dtype=torch.float64)
    means = 0.6 * torch.randn(components, dim, generator=g, dtype=torch.float64)
    covs = torch.stack([_log_uniform(dim, 0.01, 0.3, g) for _ in range(components)])
    clean = GaussianMixture(weights, means, covs)
    noise = _log_uniform(dim, 0.02, 0.2, g)
    joint = JointGaussianMixture.clean_plus_noise(clean, noise)
    return ConditionalProblem(
        "ouve-gmm", f"{components}-component clean mixture in {dim}-D plus coloured noise", joint, 256
    )


def make_conditional_problem(name: str) -> ConditionalProblem:
    return CONDITIONAL_PROBLEMS.get(name)()
