"""The training objectives and the noise-level distributions they train on: EDM's denoising loss (Karras et
al. 2022, eq. 8 and Table 1) and conditional flow matching (Lipman et al. 2022; Liu et al. 2022; Esser et al.
2024), each with the denoiser wrapper that turns its raw network into D(x_hat, sigma) (``OBJECTIVES``).

A distribution is an object with ``draw(n, generator, dtype) -> sigma``: EDM's log-normal, or the levels of a
process at uniformly drawn times (SGMSE+'s t ~ U(t_eps, 1) of the OUVE process, Richter et al. 2023,
Sec. III). Configurations name one (``SIGMA_DISTRIBUTIONS``); the loss never branches on the name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from ..denoisers import EDMPrecond, Prediction, PredictionAdapter, edm_noise_input
from ..processes import EDM, OUVE, Process, RectifiedFlow
from ..registry import Registry

__all__ = [
    "LogNormalSigma",
    "ProcessTimeSigma",
    "SIGMA_DISTRIBUTIONS",
    "sigma_distribution",
    "EDMLoss",
    "FlowMatchingLoss",
    "Objective",
    "OBJECTIVES",
]


@dataclass(frozen=True)
class LogNormalSigma:
    """ln sigma ~ N(p_mean, p_std^2) (Karras et al. 2022, Table 1).

    Under rectified flow ln sigma = ln(t / (1 - t)) = logit t, so this is also the logit-normal time sampling
    of Esser et al. 2024 (Sec. 3.1, eq. 19: logit t ~ N(m, s^2), m = 0 and s = 1 in their best runs)."""

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


class FlowMatchingLoss:
    """Conditional flow matching on the rectified-flow path x_t = (1 - t) x_0 + t eps: ||v(x_t, t) - (eps - x_0)||^2
    (Lipman et al. 2022, eq. 23 with sigma_min = 0; Liu et al. 2022, eq. 1; Esser et al. 2024, eq. 3), t drawn
    from ``distribution`` as sigma = t / (1 - t) (default the logit-normal, ``LogNormalSigma(0, 1)``). The model
    is a ``PredictionAdapter`` of flow prediction under ``RectifiedFlow``: its network output is the velocity.

    In terms of D the loss is ||D - x_0||^2 / t^2 (D = x_t - t v); it is computed on the velocity, which keeps
    float32 precision at small t."""

    def __init__(self, distribution=None):
        self.distribution = distribution or LogNormalSigma(0.0, 1.0)

    def draw(self, shape: tuple[int, ...], g: torch.Generator, dtype=torch.float32) -> tuple[Tensor, Tensor]:
        """(sigma, noise) for a batch of ``shape``, from the CPU generator ``g``."""
        sigma = self.distribution.draw(shape[0], g, dtype)
        return sigma, torch.randn(shape, generator=g, dtype=dtype)

    def weighted(self, model: PredictionAdapter, x: Tensor, sigma: Tensor, noise: Tensor, **cond) -> Tensor:
        t = (sigma.double() / (1 + sigma.double())).to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        x_t = (1 - t) * x + t * noise
        v = model.output(x_t, t.reshape(-1), **cond)
        return ((v.float() - (noise - x)) ** 2).mean()

    def __call__(self, model, x: Tensor, g: torch.Generator, **cond) -> Tensor:
        sigma, noise = self.draw(tuple(x.shape), g, x.dtype)
        return self.weighted(model, x, sigma, noise, **cond)


@dataclass(frozen=True)
class Objective:
    """What a network is trained to predict: the loss, the wrapper that makes the raw network a denoiser
    D(x_hat, sigma), the process it is sampled under by default, and the default noise-level distribution
    (log-normal sigma with ``p_mean``, ``p_std``)."""

    name: str
    process: Process
    p_mean: float
    p_std: float
    make_denoiser: Callable  # (net, sigma_data) -> D(x_hat, sigma)
    make_loss: Callable  # (distribution, sigma_data) -> the loss

    def denoiser(self, net, sigma_data: float):
        return self.make_denoiser(net, sigma_data)

    def loss(self, p_mean: float, p_std: float, sigma_data: float, distribution: str = "lognormal"):
        return self.make_loss(sigma_distribution(distribution, p_mean, p_std), sigma_data)


def _flow_denoiser(net, sigma_data):
    """The velocity network as D; it takes EDM's c_noise = ln(sigma) / 4 = logit(t) / 4, so that every samplerlab
    network (whose noise embeddings are sized for it) trains as a flow model unchanged."""
    return PredictionAdapter(net, RectifiedFlow(), Prediction.FLOW, noise_input=edm_noise_input)


OBJECTIVES: Registry[Objective] = Registry("training objective")
OBJECTIVES.register("edm")(
    Objective("edm", EDM(), -1.2, 1.2, EDMPrecond, lambda dist, sd: EDMLoss(-1.2, 1.2, sd, dist))
)
OBJECTIVES.register("flow")(
    Objective("flow", RectifiedFlow(), 0.0, 1.0, _flow_denoiser, lambda dist, sd: FlowMatchingLoss(dist))
)
