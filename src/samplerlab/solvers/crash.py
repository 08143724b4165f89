"""CRASH's sampler: the reverse SDE of the reparameterised process x / m, sigma / m
(Rouard & Hadjeres 2021, "CRASH: Raw Audio Score-based Generative Modeling for Controllable
High-resolution Drum Sound Synthesis", Sec. 3).

CRASH writes a VP-type process x(t) = m(t) x_0 + sigma_tot(t) z and changes variable to
x_hat = x / m, whose noise level is sigma = sigma_tot / m; in samplerlab's notation that is exactly
the denoiser's input x_hat = x / s at noise level sigma. In those variables the reverse-time SDEs
that share the marginals of the forward process form one family (Karras et al. 2022, eq. 6, with
the Langevin rate beta(t) = eta^2 sigma'(t) / sigma(t)):

    d x_hat = (1 + eta^2) (x_hat - D(x_hat; sigma)) d sigma / sigma + eta sqrt(d sigma^2) dw_bar.

eta = 1 is the reverse SDE of the process itself; eta = 0 is the probability-flow ODE. With D held
at its value at the start of the step, this SDE is linear in u = x_hat - D and integrates exactly
from sigma to sigma' (rho = sigma' / sigma):

    u' = rho^(1 + eta^2) u + sigma' sqrt(1 - rho^(2 eta^2)) z.

That is CRASH's discretisation: at eta = 1 it is the paper's SDE sampler (the DDPM posterior step,
i.e. DDIM with eta = 1) and at eta = 0 its deterministic sampler (DDIM with eta = 0), both tested.
If x_hat ~ N(x_0, sigma^2) and D is exact (a point mass), x_hat' ~ N(x_0, sigma'^2) for any step
size: the step never leaves the process's marginals. For 0 < eta < 1 the noise differs from
DDIM(eta), whose eta scales the posterior std rather than the Langevin rate. Weak order 1 (strong
order 1 for eta = 0); 1 model call per step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from .base import SOLVERS, DenoisedStep, EtaNoise, StepContext


def crash_coefficients(sigma: float, sigma_next: float, eta: float) -> tuple[float, float]:
    """(multiplier of u = x_hat - D, std of the fresh noise) of one exact step sigma -> sigma_next."""
    if sigma_next == 0:
        return 0.0, 0.0
    rho = sigma_next / sigma
    return rho ** (1 + eta**2), sigma_next * math.sqrt(max(0.0, 1 - rho ** (2 * eta**2)))


@SOLVERS.register("crash")
@dataclass
class CRASH(EtaNoise, DenoisedStep):
    """CRASH (Rouard & Hadjeres 2021): exact integration of the eta-family reverse SDE in x / m with
    the denoiser frozen over each step (module docstring). eta = 1: the paper's SDE sampler;
    eta = 0: its deterministic sampler, equal to DDIM. Order 1, 1 model call per step."""

    eta: float = 1.0
    PARAM_RANGES: ClassVar[dict[str, tuple]] = {"eta": (0.0, None)}

    name = "crash"
    order = 1
    calls_per_step = 1

    def __post_init__(self):
        if not (self.eta >= 0 and math.isfinite(self.eta)):
            raise ValueError(f"crash: eta must be a finite number >= 0, got {self.eta!r}")

    def update(self, ctx: StepContext, i, sigma, sigma_next, x_hat, x0, state):
        keep, noise_std = crash_coefficients(sigma, sigma_next, self.eta)
        x_next = x0 + keep * (x_hat - x0)
        if noise_std > 0:
            x_next = x_next + noise_std * ctx.randn_like(x_hat)
        return x_next, x0
