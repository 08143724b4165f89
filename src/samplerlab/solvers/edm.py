"""The stochastic sampler of Karras et al. 2022 (Alg. 2)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from .base import SOLVERS, Solver, StepContext, StepOutput


@SOLVERS.register("edm-stochastic")
@dataclass
class EDMStochastic(Solver):
    """Karras et al. 2022, Alg. 2: add noise to raise sigma_i to sigma_hat = (1 + gamma_i) sigma_i
    ("churn"), then take a Heun step from sigma_hat to sigma_{i+1}.

    gamma_i = min(S_churn / N, sqrt(2) - 1) when sigma_i is in [S_tmin, S_tmax], else 0;
    the added noise has std sqrt(sigma_hat^2 - sigma_i^2) S_noise. Alg. 2 is written for
    s = 1, sigma = t; here it runs on x_hat = x / s, which is the same for the EDM process.
    Defaults are Karras et al.'s ImageNet-64 settings (Table 5). 2 model calls per step
    (2N - 1 on a grid ending at 0); order 2 for the deterministic part.
    """

    s_churn: float = 40.0
    s_tmin: float = 0.05
    s_tmax: float = 50.0
    s_noise: float = 1.003

    name = "edm-stochastic"
    PARAM_RANGES: ClassVar[dict[str, tuple]] = {
        "s_churn": (0.0, None),
        "s_tmin": (0.0, None),
        "s_tmax": (0.0, math.inf),
        "s_noise": (0.0, None),
    }
    order = 2
    calls_per_step = 2
    stochastic = True

    def nfe(self, num_steps: int, final_zero: bool = True) -> int:
        return 2 * num_steps - (1 if final_zero else 0)

    def step(self, ctx: StepContext, x, i, state) -> StepOutput:
        sigma, sigma_next = ctx.sigma(i), ctx.sigma(i + 1)
        x_hat = x / ctx.scale(sigma)
        gamma = min(self.s_churn / ctx.num_steps, math.sqrt(2) - 1) if self.s_tmin <= sigma <= self.s_tmax else 0.0
        sigma_hat = sigma * (1 + gamma)
        if gamma > 0:
            x_hat = x_hat + math.sqrt(sigma_hat**2 - sigma**2) * self.s_noise * ctx.randn_like(x_hat)
        x0 = ctx.denoise(x_hat, sigma_hat)
        d = (x_hat - x0) / sigma_hat
        x_next = x_hat + (sigma_next - sigma_hat) * d
        if sigma_next > 0:
            x0 = ctx.denoise(x_next, sigma_next)
            d_next = (x_next - x0) / sigma_next
            x_next = x_hat + (sigma_next - sigma_hat) * 0.5 * (d + d_next)
        return StepOutput(x_next * ctx.scale(sigma_next), x0)
