"""Stochastic solvers of the reverse-time SDE (Euler-Maruyama, reverse diffusion) and ancestral samplers."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .base import SOLVERS, DenoisedStep, EtaNoise, Solver, StepContext, StepOutput


class ReverseSDESolver(Solver):
    """A discretisation of the reverse-time SDE with one model call per step: weak order 1, stochastic."""

    order = 1
    calls_per_step = 1
    stochastic = True


@SOLVERS.register("euler-maruyama")
@dataclass
class EulerMaruyama(ReverseSDESolver):
    """Euler-Maruyama on the reverse SDE dx = [f x - g^2 grad log p_t(x)] dt + g dw_bar
    (Anderson 1982; Song et al. 2021, eq. 6), in the process's time t.

    grad_x log p_t(x) = (s D(x/s; sigma) - x) / (s sigma)^2. Per step
    x <- x + h (f x - g^2 score) + g sqrt(-h) z with h = t_{i+1} - t_i < 0; the step that lands
    on sigma = 0 adds no noise (it returns the mean of the last transition). Weak order 1,
    1 model call per step.
    """

    name = "euler-maruyama"

    def step(self, ctx: StepContext, x, i, state) -> StepOutput:
        sigma, sigma_next = ctx.sigma(i), ctx.sigma(i + 1)
        p = ctx.process
        t, t_next = ctx.t(sigma), ctx.t(sigma_next)
        f, g = float(p.drift(t)), float(p.diffusion(t))
        score, x0 = ctx.score(x, sigma)
        h = t_next - t
        x_next = x + h * (f * x - g**2 * score)
        if sigma_next > 0:
            x_next = x_next + g * math.sqrt(-h) * ctx.randn_like(x)
        return StepOutput(x_next, x0)


@SOLVERS.register("reverse-diffusion")
@dataclass
class ReverseDiffusion(ReverseSDESolver):
    """The reverse-diffusion predictor (Song et al. 2021, eq. 46): x' = x - f_i(x) + G_i^2 score + G_i z with
    the forward transition between the two levels, f_i(x) = (s_i / s_{i+1} - 1) x,
    G_i = s_i sqrt(sigma_i^2 - sigma_{i+1}^2); for VP it is exactly their DDPM discretisation. The step to
    sigma = 0 adds no noise. Order 1, 1 model call per step, stochastic."""

    name = "reverse-diffusion"

    def step(self, ctx: StepContext, x, i, state) -> StepOutput:
        sigma, sigma_next = ctx.sigma(i), ctx.sigma(i + 1)
        s_i, s_next = ctx.scale(sigma), ctx.scale(sigma_next)
        G2 = s_i**2 * (sigma**2 - sigma_next**2)
        score, x0 = ctx.score(x, sigma)
        x_next = (2 - s_i / s_next) * x + G2 * score
        if sigma_next > 0:
            x_next = x_next + math.sqrt(G2) * ctx.randn_like(x)
        return StepOutput(x_next, x0)


def ancestral_split(sigma: float, sigma_next: float, eta: float) -> tuple[float, float]:
    """(sigma_down, sigma_up) of an ancestral step sigma -> sigma_next.

    The DDPM posterior q(x_hat' | x_hat, x_0) in the variance-exploding form has variance
    sigma_next^2 (sigma^2 - sigma_next^2) / sigma^2 (Ho et al. 2020, eq. 7; Song et al. 2021,
    eq. 47); eta scales its std (Song et al. 2021a, eq. 16). The deterministic part moves
    to sigma_down = sqrt(sigma_next^2 - sigma_up^2).
    """
    if sigma_next == 0:
        return 0.0, 0.0
    sigma_up = min(sigma_next, eta * sigma_next * math.sqrt(max(0.0, 1 - (sigma_next / sigma) ** 2)))
    return math.sqrt(sigma_next**2 - sigma_up**2), sigma_up


@SOLVERS.register("ddim")
@dataclass
class DDIM(EtaNoise, DenoisedStep):
    """DDIM (Song et al. 2021a, eq. 12 with sigma_t(eta) of eq. 16) on x_hat = x / s.

    x_hat' = D + sqrt(sigma'^2 - c^2) eps_hat + c z, eps_hat = (x_hat - D) / sigma,
    c = eta sigma' sqrt(1 - sigma'^2 / sigma^2). Written in x_hat it is the same for every
    process (the VP form divides through by sqrt(alpha_bar)). eta = 0 is deterministic and first
    order (Euler in sigma); eta = 1 is ancestral sampling. 1 model call per step.
    """

    eta: float = 0.0

    name = "ddim"
    order = 1
    calls_per_step = 1

    def update(self, ctx: StepContext, i, sigma, sigma_next, x_hat, x0, state):
        sigma_down, c = ancestral_split(sigma, sigma_next, self.eta)
        eps = (x_hat - x0) / sigma
        x_next = x0 + sigma_down * eps
        if c > 0:
            x_next = x_next + c * ctx.randn_like(x_hat)
        return x_next, x0


@SOLVERS.register("euler-ancestral")
@dataclass
class EulerAncestral(EtaNoise, Solver):
    """Ancestral sampling as an Euler step of the probability-flow ODE in t down to sigma_down,
    then fresh noise sigma_up (split of ``ancestral_split``).

    With the EDM process (s = 1, sigma = t) the Euler step lands exactly on D + sigma_down eps_hat,
    so this equals DDIM with the same eta (tested); under other processes the Euler step in t differs.
    Order 1, 1 model call per step.
    """

    eta: float = 1.0

    name = "euler-ancestral"
    order = 1
    calls_per_step = 1

    def step(self, ctx: StepContext, x, i, state) -> StepOutput:
        sigma, sigma_next = ctx.sigma(i), ctx.sigma(i + 1)
        sigma_down, sigma_up = ancestral_split(sigma, sigma_next, self.eta)
        d, x0 = ctx.pf_ode_dt(x, sigma)
        x_down = x + (ctx.t(sigma_down) - ctx.t(sigma)) * d
        if sigma_up == 0:  # then sigma_down == sigma_next
            return StepOutput(x_down, x0)
        x_hat = x_down / ctx.scale(sigma_down) + sigma_up * ctx.randn_like(x_down)
        return StepOutput(x_hat * ctx.scale(sigma_next), x0)
