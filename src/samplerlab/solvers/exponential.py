"""Exponential integrators in log-SNR: DPM-Solver (Lu et al. 2022) and DPM-Solver++ (Lu et al. 2022b).

All of them are written on x_hat = x / s with lambda = -log sigma (the half log-SNR of every process),
where the probability-flow ODE has the exact variation-of-constants solution from lambda_s to
lambda_t = lambda_s + h (Lu et al. 2022, eq. 3.4; Lu et al. 2022b, eq. 8):

  noise prediction:  x_t = x_s - sigma_t * sum_k h^{k+1} phi_{k+1}(h)  eps^{(k)}(lambda_s)
  data prediction:   x_t = e^{-h} x_s +   sum_k h^{k+1} phi_{k+1}(-h) x0^{(k)}(lambda_s)

with phi_1(z) = (e^z - 1)/z and phi_{k+1}(z) = (phi_k(z) - 1/k!)/z. The alpha factors of the papers
cancel in x_hat, so the same code serves every process. A method of order k truncates the sum after
k terms and estimates the derivatives from extra model calls (singlestep) or from history (multistep).

A step that lands on sigma = 0 (lambda = infinity) is always first order: it returns D(x, sigma),
the "final denoising step" of the papers (``base.DenoisedStep``). Grids that end at 0 therefore end with it.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np
import torch

from .base import (
    SOLVERS,
    FinalStep,
    History,
    HistorySolver,
    StepContext,
    combine,
    effective_order,
    extrapolation_weights,
    grid_plan,
)
from .quadrature import lagrange_weights

__all__ = ["phi", "lam", "ModelOutput", "DPMSolver", "DPMSolverPP", "SDEDPMSolverPP"]


def phi(k: int, z: float) -> float:
    """phi_k(z) = int_0^1 e^{(1-u) z} u^{k-1}/(k-1)! du; phi_0 = e^z.

    The recursion phi_{k+1} = (phi_k - 1/k!)/z loses about k digits to cancellation per decade
    of |z| below 1, so |z| < 1 uses the series sum_j z^j / (j + k)! (30 terms: exact to rounding).
    """
    if abs(z) < 1.0:
        return math.fsum(z**j / math.factorial(j + k) for j in range(30))
    value = math.exp(z)
    for j in range(1, k + 1):
        value = (value - 1 / math.factorial(j - 1)) / z
    return value


class ModelOutput(enum.Enum):
    """Which model output an exponential integrator extrapolates."""

    NOISE = "noise"  # eps = (x_hat - D) / sigma: DPM-Solver
    DATA = "data"  # x0 = D: DPM-Solver++


def lam(sigma: float) -> float:
    return -math.log(sigma)


def taylor_step(output: ModelOutput, x_hat, sigma_s: float, sigma_t: float, scaled_derivs: list):
    """x_hat at sigma_t from the truncated expansion; scaled_derivs[k] = h^k m^{(k)}(lambda_s)."""
    h = lam(sigma_t) - lam(sigma_s)
    if output is ModelOutput.DATA:
        out = math.exp(-h) * x_hat
        for k, d in enumerate(scaled_derivs):
            out = out + (h * phi(k + 1, -h)) * d
        return out
    out = x_hat
    for k, d in enumerate(scaled_derivs):
        out = out - (sigma_t * h * phi(k + 1, h)) * d
    return out


def model_output(output: ModelOutput, x_hat, x0, sigma: float):
    return x0 if output is ModelOutput.DATA else (x_hat - x0) / sigma


def backward_weights(lams: list, h: float, order: int) -> np.ndarray:
    """W with [m, h m', h^2 m'', ...] at the newest point = W @ [m_newest, m_previous, ...], from backward
    divided differences in tau = (lambda - lambda_newest) / h over the newest ``order`` points: exact for
    polynomials of degree order - 1 in lambda. Scalars only, so the update is one linear combination."""
    n = min(order, len(lams))
    pts = [(lams[-1 - j] - lams[-1]) / h for j in range(n)]
    coef = np.eye(n)  # Newton divided differences of the unit vectors: row j is coefficient j
    for level in range(1, n):
        for j in range(n - 1, level - 1, -1):
            coef[j] = (coef[j] - coef[j - 1]) / (pts[j] - pts[j - level])
    taylor = np.zeros((n, n))  # Newton basis prod_{i<j} (tau - pts[i]) expanded into powers of tau
    basis = [1.0]
    for j in range(n):
        for k, c in enumerate(basis):
            taylor[k] += c * coef[j]
        nxt = [0.0] * (len(basis) + 1)
        for k, c in enumerate(basis):
            nxt[k + 1] += c
            nxt[k] -= c * pts[j]
        basis = nxt
    return taylor * np.array([math.factorial(k) for k in range(n)])[:, None]  # tau^k coefficient = h^k m^(k) / k!


def backward_derivatives(lams: list, values: list, h: float, order: int) -> list:
    """Scaled derivatives [m, h m', h^2 m'', ...] at the newest point from backward divided differences, on the
    tensors themselves (better conditioned in float32 than ``backward_weights``' coefficients).

    Uses the newest ``order`` points; exact for polynomials of degree order - 1 in lambda.
    """
    n = min(order, len(values))
    pts = [(lams[-1 - j] - lams[-1]) / h for j in range(n)]  # tau of each point, newest = 0
    vals = [values[-1 - j] for j in range(n)]
    # Newton divided differences in tau, then expand the Newton form into Taylor coefficients at 0
    coef = list(vals)
    for level in range(1, n):
        for j in range(n - 1, level - 1, -1):
            coef[j] = (coef[j] - coef[j - 1]) / (pts[j] - pts[j - level])
    # Newton basis prod_{i<j} (tau - pts[i]) -> monomials tau^k
    taylor = [torch.zeros_like(vals[0]) for _ in range(n)]
    basis = [1.0]  # polynomial coefficients of the current Newton basis function
    for j in range(n):
        for k, b in enumerate(basis):
            if b != 0.0:
                taylor[k] = taylor[k] + b * coef[j]
        nxt = [0.0] * (len(basis) + 1)
        for k, b in enumerate(basis):
            nxt[k + 1] += b
            nxt[k] -= b * pts[j]
        basis = nxt
    # taylor[k] is the tau^k coefficient = h^k m^{(k)} / k!
    return [taylor[k] * math.factorial(k) for k in range(n)]


def taylor_weights(output: ModelOutput, sigma_s: float, sigma_t: float, n: int) -> tuple[float, list[float]]:
    """(a, [w_0 .. w_{n-1}]) with x_t = a x_s + sum_k w_k h^k m^{(k)}(lambda_s) (module docstring)."""
    h = lam(sigma_t) - lam(sigma_s)
    if output is ModelOutput.DATA:
        return math.exp(-h), [h * phi(k + 1, -h) for k in range(n)]
    return 1.0, [-sigma_t * h * phi(k + 1, h) for k in range(n)]


@SOLVERS.register("dpm-solver")
@dataclass
class DPMSolver(HistorySolver):
    """DPM-Solver (Lu et al. 2022), noise prediction.

    Singlestep orders 1-3 (Alg. 1 with r1 = 1/2; Alg. 2 with r1 = 1/3, r2 = 2/3): k model calls per
    step, order k; order 1 is DDIM. Multistep (``multistep=True``) orders 2-3 (Lu et al. 2022b,
    Appendix): one model call per step, derivatives from the previous steps' outputs, first steps at
    lower order. ``lower_order_final`` lowers the order of the last steps when there are fewer than 15.

    Few steps: singlestep orders 2-3 spend 2-3 calls per step, and at <= 10 NFE their 3-5 steps from sigma
    80 give 3-2000x Euler's error (noise prediction extrapolates eps, which is large at high sigma); the
    multistep form is within 3x of Euler there, but for the sharp ring at NFE 5 (3.2x; tests/test_low_nfe.py).
    """

    order: int = 2
    multistep: bool = False
    lower_order_final: bool = True
    final: str = "denoise"
    coefficients: tuple[float, ...] | None = None  # calibrated 2M corrections, one per step (see _step_weights)

    name = "dpm-solver"
    output = ModelOutput.NOISE

    def __post_init__(self):
        limit = 3
        if self.order not in range(1, limit + 1):
            raise ValueError(f"{self.name} order must be 1, 2 or 3, got {self.order}")
        self._final = FinalStep.parse(self.final)
        if self.coefficients is not None:
            values = self.coefficients
            if not isinstance(values, (tuple, list)) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values
            ):
                raise ValueError(f"{self.name}: coefficients must be a sequence of finite numbers, got {values!r}")
            if not (self.multistep and self.order == 2):
                raise ValueError(f"{self.name}: coefficients calibrate the multistep order-2 method (2M) only")
            self.coefficients = tuple(float(v) for v in values)

    def final_update(self, ctx: StepContext, i, sigma, x_hat, x0, state: History):
        """``final="extrapolate"`` (multistep): lambda is infinite at sigma = 0, so the last step leaves the
        log-SNR expansion for sigma, where both model outputs are smooth: D is extrapolated to sigma = 0 by the
        polynomial through the last points (x_hat(0) = D(0) on the probability-flow ODE), eps is integrated
        to 0 by the Adams weights in sigma. "denoise" (the papers', diffusers' and the default) returns D.

        Measured on the 16-D Gaussian to sigma = 0 (tests/test_final_step.py): order 3 then holds under EDM
        (3M at 512 steps: error 3.0e-7 against 2.3e-5 for 2M); order 2 gains nothing (two points extrapolate
        D to O(sigma_min^2), the floor of "denoise"); on the VP range (sigma_min ~ 0.01, comparable to the
        data's smallest scale) the extrapolation over [sigma_min, 0] is poor and the floor stays."""
        if self._final is FinalStep.DENOISE or not self.multistep:
            return None
        return self.update(ctx, i, sigma, 0.0, x_hat, x0, state)[0]

    def init_state(self, ctx: StepContext) -> History:
        return History([], [], plan=grid_plan(self, ctx, self._step_weights) if self.multistep else None)

    def _step_weights(self, ctx: StepContext, i: int) -> tuple[float, list[float]]:
        """(weight of x_hat, weights of the stored outputs newest last) of multistep step i. The stored output
        is D (data prediction) or x_hat - D (noise prediction: eps times sigma, the 1 / sigma_j in the weight)."""
        p = effective_order(self.order, i, ctx.num_steps, min(i + 1, self.order), self.lower_order_final)
        sigmas = [ctx.sigma(j) for j in range(i - p + 1, i + 1)]
        sigma, sigma_next = sigmas[-1], ctx.sigma(i + 1)
        per_eps = [1.0 / s for s in sigmas] if self.output is ModelOutput.NOISE else [1.0] * p
        if sigma_next == 0:  # the extrapolated final step (``final_update``)
            if self.output is ModelOutput.DATA:
                return 0.0, extrapolation_weights(sigmas)
            return 1.0, [w * c for w, c in zip(lagrange_weights(sigmas, sigma, 0.0), per_eps)]
        h = lam(sigma_next) - lam(sigma)
        a, w = taylor_weights(self.output, sigma, sigma_next, p)
        lams = [lam(s) for s in sigmas]
        if p == 2:
            # Lu et al. 2022b, Alg. 2 (2M): m0 + (1 / (2r)) (m0 - m_{-1}) with the phi_1 weight. Calibrated
            # ``coefficients`` add delta_i to 1 / (2r): the step's two weights move, their sum (consistency)
            # stays -- the one free coefficient of a consistent two-step combination, which is what S4S
            # (Frankel et al. 2025) fits for each step of a multistep solver.
            r = (lams[-1] - lams[-2]) / h
            c = 1 / (2 * r) + self._coefficient(ctx, i)
            newest_first = [w[0] * (1 + c), -w[0] * c]
        else:  # 1: DDIM; 3: the third-order expansion with derivatives from backward differences
            newest_first = [float(c) for c in np.asarray(w) @ backward_weights(lams, h, p)]
        return a, [c * e for c, e in zip(newest_first[::-1], per_eps)]

    def _coefficient(self, ctx: StepContext, i: int) -> float:
        if self.coefficients is None:
            return 0.0
        if len(self.coefficients) != ctx.num_steps:
            raise ValueError(f"{self.name}: {len(self.coefficients)} coefficients for a grid of {ctx.num_steps} steps")
        return self.coefficients[i]

    @property
    def calls_per_step(self) -> int:  # type: ignore[override]
        return 1 if self.multistep else self.order

    def nfe(self, num_steps: int, final_zero: bool = True) -> int:
        if self.multistep:
            return num_steps
        return self.order * num_steps - ((self.order - 1) if final_zero else 0)

    # -- singlestep stages -------------------------------------------------------------
    def _singlestep(self, ctx, x_hat, sigma, sigma_next, m0, x0):
        out = self.output
        h = lam(sigma_next) - lam(sigma)
        if self.order == 1:
            return taylor_step(out, x_hat, sigma, sigma_next, [m0]), x0
        if self.order == 2:
            r1 = 0.5
            s1 = math.exp(-(lam(sigma) + r1 * h))
            u = taylor_step(out, x_hat, sigma, s1, [m0])
            x0_u = ctx.denoise(u, s1)
            d1 = model_output(out, u, x0_u, s1) - m0
            # Lu et al. 2022 Alg. 1 / 2022b Alg. 1: the first-derivative term uses phi_1 / (2 r1)
            first = taylor_step(out, x_hat, sigma, sigma_next, [m0])
            if out is ModelOutput.DATA:
                return first + (h * phi(1, -h) / (2 * r1)) * d1, x0_u
            return first - (sigma_next * h * phi(1, h) / (2 * r1)) * d1, x0_u
        r1, r2 = 1 / 3, 2 / 3
        s1 = math.exp(-(lam(sigma) + r1 * h))
        s2 = math.exp(-(lam(sigma) + r2 * h))
        u1 = taylor_step(out, x_hat, sigma, s1, [m0])
        d1 = model_output(out, u1, ctx.denoise(u1, s1), s1) - m0
        # u2 from the expansion over r2 h with m' ~ d1 / (r1 h), i.e. (r2 h) m' ~ d1 r2 / r1 (Lu et al. 2022, Alg. 2)
        u2 = taylor_step(out, x_hat, sigma, s2, [m0, d1 * (r2 / r1)])
        x0_u2 = ctx.denoise(u2, s2)
        d2 = model_output(out, u2, x0_u2, s2) - m0
        return taylor_step(out, x_hat, sigma, sigma_next, [m0, d2 / r2]), x0_u2

    def update(self, ctx: StepContext, i, sigma, sigma_next, x_hat, x0, state: History):
        if not self.multistep:
            return self._singlestep(ctx, x_hat, sigma, sigma_next, model_output(self.output, x_hat, x0, sigma), x0)
        state.push(lam(sigma), x0 if self.output is ModelOutput.DATA else x_hat - x0, keep=self.order)
        a, weights = state.plan[i]
        terms = list(zip(weights, state.values[-len(weights) :]))
        return combine([(a, x_hat)] + terms if a else terms), x0


@SOLVERS.register("dpm-solver++")
@dataclass
class DPMSolverPP(DPMSolver):
    """DPM-Solver++ (Lu et al. 2022b): the same integrators on the data prediction x0 = D.

    Defaults to the multistep 2M (Alg. 2); ``order=3`` is 3M (third-order Taylor expansion of eq. 8
    with derivatives from backward differences); ``multistep=False`` gives the singlestep 2S (Alg. 1)
    and 3S. Order = ``order``; 1 model call per step multistep, ``order`` singlestep.

    Few steps: on a sharp mixture (the bundled ring, mode std 0.03) extrapolating D across the steps in
    which the modes separate overshoots: 2M is 3.6-4.3x Euler's error at NFE 5-6, 3M and 3S 3-7x up to
    NFE 10; elsewhere they are within 3x of Euler or better (tests/test_low_nfe.py).
    """

    multistep: bool = True
    name = "dpm-solver++"
    output = ModelOutput.DATA


@SOLVERS.register("sde-dpm-solver++")
@dataclass
class SDEDPMSolverPP(HistorySolver):
    """SDE-DPM-Solver++(2M) (Lu et al. 2022b, Appendix): data prediction on the reverse SDE.

    x_t = e^{-2h} x_s + (1 - e^{-2h}) D_hat + sigma_t sqrt(1 - e^{-2h}) z, with
    D_hat = m0 + (m0 - m_{-1}) / (2r) in 2M (first order on the first and last steps).
    Order 1 is ancestral sampling (DDIM with eta = 1). 1 model call per step, stochastic.
    """

    order: int = 2
    lower_order_final: bool = True

    name = "sde-dpm-solver++"
    calls_per_step = 1
    stochastic = True

    def __post_init__(self):
        if self.order not in (1, 2):
            raise ValueError(f"sde-dpm-solver++ order must be 1 or 2, got {self.order}")

    def update(self, ctx: StepContext, i, sigma, sigma_next, x_hat, x0, state: History):
        state.push(lam(sigma), x0, keep=2)
        h = lam(sigma_next) - lam(sigma)
        p = effective_order(self.order, i, ctx.num_steps, len(state.values), self.lower_order_final)
        d = x0
        if p == 2:
            r = (state.lams[-1] - state.lams[-2]) / h
            d = x0 + (x0 - state.values[-2]) / (2 * r)
        decay = math.exp(-2 * h)
        return decay * x_hat + (1 - decay) * d + sigma_next * math.sqrt(1 - decay) * ctx.randn_like(x_hat), x0
