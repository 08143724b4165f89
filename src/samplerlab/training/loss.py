"""The EDM loss (Karras et al. 2022, eq. 8 and Table 1) and the noise-level distributions it trains on.

A distribution is an object with ``draw(n, generator, dtype) -> sigma``: EDM's log-normal, or the levels of a
process at uniformly drawn times (SGMSE+'s t ~ U(t_eps, 1) of the OUVE process, Richter et al. 2023,
Sec. III). Configurations name one (``SIGMA_DISTRIBUTIONS``); the loss never branches on the name.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..processes import OUVE, Process
from ..registry import Registry

__all__ = ["LogNormalSigma", "ProcessTimeSigma", "SIGMA_DISTRIBUTIONS", "sigma_distribution", "EDMLoss"]


@dataclass(frozen=True)
class LogNormalSigma:
    """ln sigma ~ N(p_mean, p_std^2) (Karras et al. 2022, Table 1)."""

    p_mean: float = -1.2
    p_std: float = 1.2

    def draw(self, n: int, g: torch.Generator, dtype=torch.float32) -> Tensor:
        return torch.exp(self.p_mean + self.p_std * torch.randn(n, generator=g, dtype=dtype))


@dataclass(frozen=True)
class ProcessTimeSigma:
    """sigma(t) of ``process`` at t ~ U(t_min, t_max): denoising score matching over the process's times."""

    process: Process

    def draw(self, n: int, g: torch.Generator, dtype=torch.float32) -> Tensor:
        p = self.process
        t = p.t_min + (p.t_max - p.t_min) * torch.rand(n, generator=g, dtype=torch.float64)
        return p.sigma(t).to(dtype)


SIGMA_DISTRIBUTIONS: Registry = Registry("sigma distribution")
SIGMA_DISTRIBUTIONS.register("lognormal")(lambda p_mean, p_std: LogNormalSigma(p_mean, p_std))
SIGMA_DISTRIBUTIONS.register("ouve")(lambda p_mean, p_std: ProcessTimeSigma(OUVE()))


def sigma_distribution(name: str, p_mean: float = -1.2, p_std: float = 1.2):
    """The distribution a configuration names (the log-normal's parameters used where it is that)."""
    return SIGMA_DISTRIBUTIONS.get(name)(p_mean, p_std)


class EDMLoss:
    """lambda(sigma) ||D(x + sigma e; sigma) - x||^2 with lambda = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2
    (Karras et al. 2022, eq. 8 and Table 1); sigma from ``distribution`` (a name or an object, default EDM's
    log-normal with P_mean, P_std). Conditioning (class labels, the noisy y of OUVE) reaches the denoiser as
    keyword arguments, the one way every model receives it."""

    def __init__(self, p_mean: float, p_std: float, sigma_data: float, distribution="lognormal"):
        self.sigma_data = sigma_data
        self.distribution = (
            sigma_distribution(distribution, p_mean, p_std) if isinstance(distribution, str) else distribution
        )

    def draw(self, shape: tuple[int, ...], g: torch.Generator, dtype=torch.float32) -> tuple[Tensor, Tensor]:
        """(sigma, noise) for a batch of ``shape``, from the CPU generator ``g``."""
        sigma = self.distribution.draw(shape[0], g, dtype)
        return sigma, torch.randn(shape, generator=g, dtype=dtype)

    def weighted(self, denoiser, x: Tensor, sigma: Tensor, noise: Tensor, **cond) -> Tensor:
        s = sigma.reshape(-1, *([1] * (x.ndim - 1)))
        weight = (s**2 + self.sigma_data**2) / (s * self.sigma_data) ** 2
        d = denoiser(x + s * noise, sigma, **cond)
        return (weight * (d.float() - x) ** 2).mean()

    def __call__(self, denoiser, x: Tensor, g: torch.Generator, **cond) -> Tensor:
        sigma, noise = self.draw(tuple(x.shape), g, x.dtype)
        return self.weighted(denoiser, x, sigma, noise, **cond)
