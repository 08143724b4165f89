"""Adams-Bashforth-type multistep solvers on eps: DEIS tAB / rhoAB (Zhang & Chen 2023), LMS, iPNDM.

On x_hat = x / s the probability-flow ODE is dx_hat/dt = sigma'(t) eps(x_hat, t) with
eps = (x_hat - D) / sigma. Extrapolating eps by the Lagrange polynomial through the current and the
previous r points in a variable v and integrating exactly gives (Zhang & Chen 2023, eq. 14-15)

    x_hat_{i+1} = x_hat_i + sum_j C_ij eps_{i-j},   C_ij = int_{v_i}^{v_{i+1}} w(v) l_j(v) dv,

with w = dsigma/dt for tAB (v = t, the process's time) and w = 1 for rhoAB (v = rho = sigma). The
coefficients are integrated over sigma by 8-point Gauss-Legendre quadrature (tAB after the substitution
sigma = sigma(t)), exact for rhoAB's polynomials and accurate to rounding for tAB. Here ``order`` = r + 1 (the global order);
DEIS calls the same methods tAB-r / rhoAB-r. The first steps use the points available. eps is finite at
sigma = 0, so the step to 0 is an Adams step like the others and keeps the order (``final="extrapolate"``,
as k-diffusion's LMS in sigma does), unless ``lower_order_final`` lowers it in runs under 15 steps;
``final="denoise"`` returns D there instead, first order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import SOLVERS, FinalStep, History, HistorySolver, StepContext, combine, effective_order, grid_plan
from .quadrature import lagrange_weights

__all__ = ["DEISMultistep", "DEISTimeAB", "DEISRhoAB", "LMS", "IPNDM", "lagrange_weights"]


class DEISMultistep(HistorySolver):
    """Shared body of tAB and rhoAB: history of eps at past variable values."""

    order: int
    lower_order_final: bool
    calls_per_step = 1

    def __post_init__(self) -> None:
        if self.order not in range(1, 5):
            raise ValueError(f"{self.name} order must be 1 to 4, got {self.order}")
        self._final = FinalStep.parse(self.final)

    def variable(self, ctx: StepContext, sigma: float) -> float:
        raise NotImplementedError

    def node_map(self, ctx: StepContext):
        """Maps sigma to the interpolation variable (None: the variable is sigma itself)."""
        return None

    def init_state(self, ctx: StepContext) -> History:
        return History([], [], plan=grid_plan(self, ctx, self._step_weights))

    def _step_weights(self, ctx: StepContext, i: int) -> list[float]:
        """Weights of the stored differences x_hat_j - D_j (newest last) in step i: the Adams weights of
        eps_j = (x_hat_j - D_j) / sigma_j, divided by sigma_j, so a step is one linear combination."""
        p = effective_order(self.order, i, ctx.num_steps, min(i + 1, self.order), self.lower_order_final)
        sigmas = [ctx.sigma(j) for j in range(i - p + 1, i + 1)]
        sigma, sigma_next = sigmas[-1], ctx.sigma(i + 1)
        if sigma_next == 0:
            # eps = dx_hat/dsigma is smooth in sigma down to 0, so an Adams step in sigma (rho) reaches 0 and
            # keeps the order; in rho for tAB too, since the process's time is not smooth there (VP: t ~ sigma^2)
            weights = lagrange_weights(sigmas, sigma, 0.0)
        else:
            weights = lagrange_weights([self.variable(ctx, s) for s in sigmas], sigma, sigma_next, self.node_map(ctx))
        return [w / s for w, s in zip(weights, sigmas)]

    def update(self, ctx: StepContext, i, sigma, sigma_next, x_hat, x0, state: History):
        state.push(sigma, x_hat - x0, keep=self.order)
        weights = state.plan[i]
        return combine([(1.0, x_hat)] + list(zip(weights, state.values[-len(weights) :]))), x0

    def final_update(self, ctx: StepContext, i, sigma, x_hat, x0, state: History):
        """The Adams step in sigma to 0 (``final = "extrapolate"``, the default: the method's order, see
        ``_step_weights``); "denoise" returns D, first order."""
        if self._final is FinalStep.DENOISE:
            return None
        return self.update(ctx, i, sigma, 0.0, x_hat, x0, state)[0]


@SOLVERS.register("deis-tab")
@dataclass
class DEISTimeAB(DEISMultistep):
    """tAB-DEIS (Zhang & Chen 2023, eq. 15): eps extrapolated in the process's time t, weights
    int sigma'(t) l_j(t) dt. With the EDM process (sigma = t) it equals rhoAB. Order ``order``
    (DEIS's r = order - 1), 1 model call per step."""

    order: int = 3
    lower_order_final: bool = True
    final: str = "extrapolate"
    name = "deis-tab"

    def variable(self, ctx, sigma):
        return ctx.t(sigma)

    def node_map(self, ctx):
        p = ctx.process
        return lambda sig: p.t_of_sigma(torch.from_numpy(sig)).numpy()


@SOLVERS.register("deis-rhoab")
@dataclass
class DEISRhoAB(DEISMultistep):
    """rhoAB-DEIS (Zhang & Chen 2023, Sec. 4): eps extrapolated in rho = sigma, exact polynomial
    weights. Order ``order``, 1 model call per step."""

    order: int = 3
    lower_order_final: bool = True
    final: str = "extrapolate"
    name = "deis-rhoab"

    def variable(self, ctx, sigma):
        return sigma


@SOLVERS.register("lms")
@dataclass
class LMS(DEISRhoAB):
    """Linear multistep in sigma: variable-step Adams-Bashforth on dx_hat/dsigma = eps
    (Karras et al. 2022 discuss it as a baseline). This is rhoAB-DEIS; kept under its own name
    with order 4 by default. 1 model call per step."""

    order: int = 4
    name = "lms"


# Adams-Bashforth coefficients for equal steps, newest first (Hairer, Norsett & Wanner, III.1)
_AB = {1: (1.0,), 2: (3 / 2, -1 / 2), 3: (23 / 12, -16 / 12, 5 / 12), 4: (55 / 24, -59 / 24, 37 / 24, -9 / 24)}


@SOLVERS.register("ipndm")
@dataclass
class IPNDM(HistorySolver):
    """Improved PNDM (Zhang & Chen 2023, Sec. 4 / App.): fixed-coefficient Adams-Bashforth up to
    fourth order on eps in rho = sigma, warm-started with lower orders instead of PNDM's
    Runge-Kutta start. The coefficients assume equal steps; on a smooth non-uniform grid and with
    the Euler first step the global order is 2 (the declared and tested order).
    1 model call per step. Few steps: on the sharp ring its error is 4-5x Euler's at NFE 5-6 (fixed
    equal-step coefficients on a grid whose steps are far from equal; tests/test_low_nfe.py)."""

    max_order: int = 4
    name = "ipndm"
    order = 2
    calls_per_step = 1

    def __post_init__(self):
        if self.max_order not in _AB:
            raise ValueError(f"ipndm max_order must be 1 to 4, got {self.max_order}")

    def update(self, ctx: StepContext, i, sigma, sigma_next, x_hat, x0, state: History):
        state.push(
            sigma, x_hat - x0, keep=self.max_order
        )  # eps_j = (x_hat_j - D_j) / sigma_j: 1 / sigma_j in the weight
        coeffs = _AB[min(self.max_order, len(state.values))]
        h = sigma_next - sigma
        terms = [(h * c / s, d) for c, s, d in zip(coeffs, reversed(state.lams), reversed(state.values))]
        return combine([(1.0, x_hat)] + terms), x0
