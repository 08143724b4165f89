"""UniPC (Zhao et al. 2023): the unified predictor UniP and corrector UniC, data prediction.

On x_hat with lambda = -log sigma the exact solution is (see exponential.py)
    x_t = e^{-h} x_s + h phi_1(-h) m_s + sum_{k>=1} h phi_{k+1}(-h) h^k m^{(k)}(lambda_s).
UniP-p replaces the derivative terms by B(h) sum_m a_m D_m / r_m with D_m = m_{s_m} - m_s at earlier
points lambda_{s_m} = lambda_s + r_m h (r_m < 0); matching the Taylor terms gives the linear system
    sum_m a_m r_m^{k-1} = k! h phi_{k+1}(-h) / B(h),   k = 1 .. p-1
(Zhao et al. 2023, Thm. 3.1 and Alg. 1), except that a single unknown is set to 1/2 as in the paper.
UniC-p adds the model output at the predicted point (r_p = 1) and solves the p x p system; the
corrected state moves on while the model output at the predicted point is kept for the next step,
so the corrector costs no extra model call. B(h) = h ("bh1") or 1 - e^{-h} ("bh2", ``BVariant``).

Order: UniP-p alone is order p; with UniC it is p + 1. One model call per step (the last step has
no corrector). The first steps use the history available; a step to sigma = 0 returns D.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np

from .base import (
    SOLVERS,
    FinalStep,
    History,
    Solver,
    StepContext,
    StepOutput,
    combine,
    effective_order,
    extrapolation_weights,
    grid_plan,
)
from .exponential import lam, phi

__all__ = ["UniPC", "BVariant"]


class BVariant(enum.Enum):
    """B(h) of the data-prediction UniPC, written with the positive step h = lambda_t - lambda_s.

    Zhao et al. 2023 state B for the step variable of the form in use; the data-prediction form steps in
    -h (its phi_1 term is e^{-h} - 1), so bh2's B(h) = e^{-h} - 1 there, entering the update with a minus
    sign: + (1 - e^{-h}) here. With it UniP-2 is DPM-Solver++(2M) (tested). Both variants are O(h), and
    bh2 is bounded by 1 where bh1 grows with h.
    """

    BH1 = "bh1"  # B(h) = h
    BH2 = "bh2"  # B(h) = 1 - e^{-h}

    def __call__(self, h: float) -> float:
        return h if self is BVariant.BH1 else -math.expm1(-h)


def _coefficients(rs: list[float], h: float, b_h: float) -> list[float]:
    p = len(rs)
    if p == 0:
        return []
    if p == 1:
        return [0.5]
    R = np.array([[r**k for r in rs] for k in range(p)])
    rhs = np.array([math.factorial(k + 1) * h * phi(k + 2, -h) / b_h for k in range(p)])
    return list(np.linalg.solve(R, rhs))


@dataclass
class UniPCState:
    history: History
    x_pred_output: object = None  # model output at the predicted point, carried to the next step


@SOLVERS.register("unipc")
@dataclass
class UniPC(Solver):
    """UniPC-p (Zhao et al. 2023): UniP-p predictor with the UniC-p corrector (``corrector=True``).

    ``order`` p in 1..3; ``variant`` bh1 or bh2. Declared order p + 1 with the corrector, p without.

    Few steps: bh2 (the default) is within 3x of Euler at NFE 5-10 except on the sharp ring at NFE 5-6
    (as DPM-Solver++ 2M, which UniP-2 bh2 is). bh1 keeps the paper's a_1 = 1/2 with B(h) = h, which weights
    the derivative term h / 2 where its exact weight is h phi_2(-h): far too much when the log-SNR step h
    exceeds 1, as on Karras grids at <= 10 steps (3.5-19x Euler's error there; tests/test_low_nfe.py).
    """

    order: int = 2
    variant: str = "bh2"
    corrector: bool = True
    lower_order_final: bool = True
    final: str = "denoise"  # or "extrapolate": D extrapolated to sigma = 0 in sigma (as DPM-Solver++'s)

    name = "unipc"
    calls_per_step = 1

    def __post_init__(self):
        if self.order not in (1, 2, 3):
            raise ValueError(f"unipc order must be 1, 2 or 3, got {self.order}")
        try:
            self._b = BVariant(self.variant)
        except ValueError:
            raise ValueError(f"unknown unipc variant {self.variant!r}; valid: bh1, bh2") from None
        self._final = FinalStep.parse(self.final)

    @property
    def convergence_order(self) -> int:  # type: ignore[override]
        return self.order + (1 if self.corrector else 0)

    def init_state(self, ctx):
        return UniPCState(History([], [], plan=grid_plan(self, ctx, self._step_weights)))

    def _weights(self, lams: list[float], sigma: float, sigma_next: float, corrected: bool) -> list[float]:
        """Weights of [x_hat, m_s, the older outputs newest first (, the new point's output)] in
        e^{-h} x + h phi1(-h) m_s + B(h) sum a_m D_m / r_m, written as one linear combination (D_m = m_m - m_s)."""
        h = lam(sigma_next) - lam(sigma)
        rs = [(lams[-1 - j] - lams[-1]) / h for j in range(1, len(lams))] + ([1.0] if corrected else [])
        b_h = self._b(h)
        c = [b_h * a / r for a, r in zip(_coefficients(rs, h, b_h), rs)]
        return [math.exp(-h), h * phi(1, -h) - sum(c)] + c

    def _step_weights(self, ctx: StepContext, i: int):
        """Step i's (predictor, corrector) weights, or the extrapolation weights of D to sigma = 0."""
        p = effective_order(self.order, i, ctx.num_steps, min(i + 1, self.order), self.lower_order_final)
        sigmas = [ctx.sigma(j) for j in range(i - p + 1, i + 1)]
        sigma, sigma_next = sigmas[-1], ctx.sigma(i + 1)
        if sigma_next == 0:
            return extrapolation_weights(sigmas)
        lams = [lam(s) for s in sigmas]
        return self._weights(lams, sigma, sigma_next, False), self._weights(lams, sigma, sigma_next, True)

    def step(self, ctx: StepContext, x, i, state: UniPCState) -> StepOutput:
        sigma, sigma_next = ctx.sigma(i), ctx.sigma(i + 1)
        x_hat = x / ctx.scale(sigma)
        if state.x_pred_output is None:  # first step: evaluate at the starting point
            state.x_pred_output = ctx.denoise(x_hat, sigma)
        m = state.x_pred_output
        if sigma_next == 0:
            if self._final is FinalStep.DENOISE:
                return ctx.finish(m, state)
            state.history.push(lam(sigma), m, keep=self.order)
            weights = state.history.plan[i]
            return ctx.finish(combine(list(zip(weights, state.history.values[-len(weights) :]))), state)
        state.history.push(lam(sigma), m, keep=self.order)
        predictor, corrector = state.history.plan[i]
        values = state.history.values[::-1]  # newest first: m_s, then the older outputs
        x_pred = combine(list(zip(predictor, [x_hat] + values)))
        if i == ctx.num_steps - 1:  # the last step has no corrector
            return StepOutput(x_pred * ctx.scale(sigma_next), m, state)
        m_next = ctx.denoise(x_pred, sigma_next)
        x_next = (
            combine(list(zip(corrector, [x_hat] + values[: len(corrector) - 2] + [m_next])))
            if self.corrector
            else x_pred
        )
        state.x_pred_output = m_next
        return StepOutput(x_next * ctx.scale(sigma_next), m_next, state)
