"""Bundled analytic problems: exact Gaussian-mixture data with known denoisers.

Each problem is built deterministically from a fixed seed, so its numbers are
comparable across runs and machines.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from .analytic import GaussianMixture
from .registry import Registry

__all__ = ["AnalyticProblem", "PROBLEMS", "make_problem"]


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
