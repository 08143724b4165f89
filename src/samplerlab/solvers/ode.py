"""Deterministic solvers of the probability-flow ODE in the process's own time t."""

from __future__ import annotations

from dataclasses import dataclass

from .base import SOLVERS, Solver, StepContext, StepOutput


@SOLVERS.register("euler")
@dataclass
class Euler(Solver):
    """Euler's method on the probability-flow ODE in t (Karras et al. 2022, Alg. 1 without line 6-8).

    x_{i+1} = x_i + (t_{i+1} - t_i) dx/dt(x_i, t_i). Order 1, 1 model call per step.
    With the EDM process (s = 1, sigma = t) this is DDIM with eta = 0 (Karras et al. 2022, Sec. 3).
    """

    name = "euler"
    order = 1
    calls_per_step = 1

    def step(self, ctx: StepContext, x, i, state) -> StepOutput:
        sigma, sigma_next = ctx.sigma(i), ctx.sigma(i + 1)
        d, x0 = ctx.pf_ode_dt(x, sigma)
        h = ctx.t(sigma_next) - ctx.t(sigma)
        return StepOutput(x + h * d, x0)


@SOLVERS.register("heun")
@dataclass
class Heun(Solver):
    """Heun's 2nd-order method (Karras et al. 2022, Alg. 1): Euler predictor, trapezoidal corrector.

    The corrector is skipped on a step to sigma = 0, where dx/dt is not defined, so a grid of
    N steps ending at 0 costs 2N - 1 model calls. Order 2, 2 model calls per step.

    Few steps: at <= 10 NFE (<= 5 steps from sigma 80) it is 5-50x worse than Euler at the same NFE on the
    bundled problems; its second order pays from about 20-35 NFE (tests/test_low_nfe.py lists it).
    """

    name = "heun"
    order = 2
    calls_per_step = 2

    def nfe(self, num_steps: int, final_zero: bool = True) -> int:
        return 2 * num_steps - (1 if final_zero else 0)

    def step(self, ctx: StepContext, x, i, state) -> StepOutput:
        sigma, sigma_next = ctx.sigma(i), ctx.sigma(i + 1)
        d, x0 = ctx.pf_ode_dt(x, sigma)
        h = ctx.t(sigma_next) - ctx.t(sigma)
        x_next = x + h * d
        if sigma_next > 0:
            d_next, x0 = ctx.pf_ode_dt(x_next, sigma_next)
            x_next = x + h * 0.5 * (d + d_next)
        return StepOutput(x_next, x0)
