"""Runge-Kutta solvers from Butcher tableaus that check themselves when built.

``ButcherTableau`` verifies, on construction, that it is explicit, that c_i = sum_j a_ij, and that
its weights satisfy every order condition up to its stated order (Butcher 1963; Hairer, Norsett &
Wanner, Solving ODEs I, Table II.2.1: 1, 2, 4 and 8 conditions for orders 2-4, 9 more for order 5),
and its embedded weights, if any, up to their order.

Solvers:
  deis-rhork   rhoRK-DEIS (Zhang & Chen 2023, Sec. 4): classic RK on dx_hat/drho = eps(x_hat, rho), rho = sigma
  dopri5       adaptive Dormand-Prince 5(4) (Dormand & Prince 1980) on the probability-flow ODE in 1 / sigma,
               d(x_hat / sigma)/d(1 / sigma) = D (or in log sigma), with per-sample PI step-size control
"""

from __future__ import annotations

import dataclasses
import enum
import math
from dataclasses import dataclass
from fractions import Fraction as F
from typing import ClassVar

import numpy as np
import torch

from .adaptive import AdaptiveStats, PIController
from .base import SOLVERS, DenoisedStep, Solver, StepContext, StepOutput

__all__ = ["ButcherTableau", "TABLEAUS", "DEISRhoRK", "DormandPrince"]


def _order_conditions(A: np.ndarray, b: np.ndarray, c: np.ndarray) -> list[tuple[int, float, float]]:
    """(order, value, required) for the rooted-tree conditions up to order 5."""
    Ac, Ac2, Ac3 = A @ c, A @ c**2, A @ c**3
    AAc, AAc2 = A @ Ac, A @ Ac2
    return [
        (1, b.sum(), 1.0),
        (2, b @ c, 1 / 2),
        (3, b @ c**2, 1 / 3),
        (3, b @ Ac, 1 / 6),
        (4, b @ c**3, 1 / 4),
        (4, b @ (c * Ac), 1 / 8),
        (4, b @ Ac2, 1 / 12),
        (4, b @ AAc, 1 / 24),
        (5, b @ c**4, 1 / 5),
        (5, b @ (c**2 * Ac), 1 / 10),
        (5, b @ (c * Ac2), 1 / 15),
        (5, b @ (c * AAc), 1 / 30),
        (5, b @ Ac**2, 1 / 20),
        (5, b @ Ac3, 1 / 20),
        (5, b @ (A @ (c * Ac)), 1 / 40),
        (5, b @ AAc2, 1 / 60),
        (5, b @ (A @ AAc), 1 / 120),
    ]


@dataclass(frozen=True)
class ButcherTableau:
    name: str
    a: tuple  # lower-triangular rows
    b: tuple
    c: tuple
    order: int
    b_err: tuple | None = None  # embedded lower-order weights
    err_order: int | None = None
    fsal: bool = False

    def __post_init__(self):
        s = len(self.b)
        A = self.A
        c = np.array([float(v) for v in self.c])
        if A.shape != (s, s) or len(c) != s:
            raise ValueError(f"tableau {self.name}: a must be {s}x{s} and c of length {s}")
        if np.any(np.triu(A) != 0):
            raise ValueError(f"tableau {self.name} is not explicit")
        if not np.allclose(A.sum(1), c, atol=1e-14):
            raise ValueError(f"tableau {self.name}: c_i != sum_j a_ij")
        for weights, order, label in ((self.b, self.order, "b"), (self.b_err, self.err_order, "b_err")):
            if weights is None:
                continue
            if order > 5:
                raise ValueError("order conditions are checked up to 5")
            w = np.array([float(v) for v in weights])
            for k, value, required in _order_conditions(A, w, c):
                if k <= order and abs(value - required) > 1e-13:
                    raise ValueError(
                        f"tableau {self.name}: weights {label} fail an order-{k} condition ({value} != {required})"
                    )
            # a weight vector of order p must *fail* some order p+1 condition, or the stated order is too low
        if self.fsal and not np.allclose(A[-1], np.array([float(v) for v in self.b])):
            raise ValueError(f"tableau {self.name}: FSAL requires the last row of a to equal b")

    @property
    def A(self) -> np.ndarray:
        s = len(self.b)
        A = np.zeros((s, s))
        for i, row in enumerate(self.a):
            for j, v in enumerate(row):
                A[i, j] = float(v)
        return A

    @property
    def stages(self) -> int:
        return len(self.b)


TABLEAUS = {
    "heun": ButcherTableau("heun", ((), (1,)), (F(1, 2), F(1, 2)), (0, 1), order=2),
    "kutta3": ButcherTableau(
        "kutta3", ((), (F(1, 2),), (-1, 2)), (F(1, 6), F(2, 3), F(1, 6)), (0, F(1, 2), 1), order=3
    ),
    "rk4": ButcherTableau(
        "rk4",
        ((), (F(1, 2),), (0, F(1, 2)), (0, 0, 1)),
        (F(1, 6), F(1, 3), F(1, 3), F(1, 6)),
        (0, F(1, 2), F(1, 2), 1),
        order=4,
    ),
    # Dormand & Prince 1980, Table 5.2 (RK5(4)7M)
    "dopri5": ButcherTableau(
        "dopri5",
        (
            (),
            (F(1, 5),),
            (F(3, 40), F(9, 40)),
            (F(44, 45), F(-56, 15), F(32, 9)),
            (F(19372, 6561), F(-25360, 2187), F(64448, 6561), F(-212, 729)),
            (F(9017, 3168), F(-355, 33), F(46732, 5247), F(49, 176), F(-5103, 18656)),
            (F(35, 384), 0, F(500, 1113), F(125, 192), F(-2187, 6784), F(11, 84)),
        ),
        (F(35, 384), 0, F(500, 1113), F(125, 192), F(-2187, 6784), F(11, 84), 0),
        (0, F(1, 5), F(3, 10), F(4, 5), F(8, 9), 1, 1),
        order=5,
        b_err=(F(5179, 57600), 0, F(7571, 16695), F(393, 640), F(-92097, 339200), F(187, 2100), F(1, 40)),
        err_order=4,
        fsal=True,
    ),
}


@SOLVERS.register("deis-rhork")
@dataclass
class DEISRhoRK(DenoisedStep):
    """rhoRK-DEIS (Zhang & Chen 2023, Sec. 4): an explicit RK method on dx_hat/drho = eps(x_hat, rho),
    rho = sigma. ``tableau`` is heun (order 2), kutta3 (3) or rk4 (4); stages = model calls per step.
    The step to sigma = 0 is an Euler step (eps is undefined at 0): it returns D.

    Few steps: with 2-4 calls per step, <= 10 NFE leaves 2-5 steps and the error is 3-500x Euler's at
    the same NFE (tests/test_low_nfe.py lists it); use it from about 20 NFE."""

    tableau: str = "rk4"
    name = "deis-rhork"

    def __post_init__(self):
        if self.tableau not in ("heun", "kutta3", "rk4"):
            raise ValueError(f"deis-rhork tableau must be heun, kutta3 or rk4, got {self.tableau!r}")
        self._tab = TABLEAUS[self.tableau]

    @property
    def order(self) -> int:  # type: ignore[override]
        return self._tab.order

    @property
    def calls_per_step(self) -> int:  # type: ignore[override]
        return self._tab.stages

    def nfe(self, num_steps: int, final_zero: bool = True) -> int:
        s = self._tab.stages
        return s * num_steps - ((s - 1) if final_zero else 0)

    def update(self, ctx: StepContext, i, sigma, sigma_next, x_hat, x0, state):
        tab, A = self._tab, self._tab.A
        h = sigma_next - sigma
        ks = [(x_hat - x0) / sigma]  # stage 1 is the opening evaluation at rho = sigma
        for j in range(1, tab.stages):
            xj = x_hat
            for m in range(j):
                if A[j, m] != 0:
                    xj = xj + (h * A[j, m]) * ks[m]
            rho = sigma + float(tab.c[j]) * h
            x0 = ctx.denoise(xj, rho)
            ks.append((xj - x0) / rho)
        x_next = x_hat
        for bj, kj in zip(tab.b, ks):
            if bj != 0:
                x_next = x_next + (h * float(bj)) * kj
        return x_next, x0


class DopriVariable(enum.Enum):
    """The variable dopri5 integrates the probability-flow ODE in (its state z and independent variable v).

    LOG_SIGMA: z = x_hat, v = log sigma, dz/dv = x_hat - D.
    INV_SIGMA: z = x_hat / sigma, v = 1 / sigma (= e^lambda), dz/dv = D: the variable of the exponential
    integrators (Lu et al. 2022b, eq. 8 after lambda -> e^lambda; Zhang & Chen 2023, eq. 9), where the linear
    part of the drift is gone and the solution is nearly linear in v both where D is the data mean (large
    sigma) and where D(x) ~ x (small sigma). At loose tolerances it is far more accurate for the calls (gmm64,
    rtol 0.1: 57 NFE, RMS error 5e-3, against log sigma's 63 NFE and 0.23); at tight ones the two are alike.
    """

    LOG_SIGMA = "log-sigma"
    INV_SIGMA = "inv-sigma"

    def of_sigma(self, sigma: float) -> float:
        return math.log(sigma) if self is DopriVariable.LOG_SIGMA else 1.0 / sigma

    def sigma(self, v: torch.Tensor) -> torch.Tensor:
        return torch.exp(v) if self is DopriVariable.LOG_SIGMA else 1.0 / v

    def to_x(self, z, v):
        return z if self is DopriVariable.LOG_SIGMA else z / v

    def from_x(self, x, v):
        return x if self is DopriVariable.LOG_SIGMA else x * v

    def derivative(self, x, x0):
        return x - x0 if self is DopriVariable.LOG_SIGMA else x0


def check_tolerance(solver: str, name: str, value: float, dtype: torch.dtype) -> None:
    """A relative tolerance below what the state's dtype resolves cannot be met: refuse it at once instead
    of shrinking steps until an attempt limit (ten machine epsilons: float32 1.2e-6, float64 2.2e-15)."""
    floor = 10 * torch.finfo(dtype).eps
    if value < floor:
        raise ValueError(
            f"{solver}: {name}={value:g} is below what {dtype} resolves ({floor:.1e}); loosen it or sample in float64"
        )


@dataclass
class DopriState:
    """The step counts, and D at the state and level the last integration ended on (its FSAL stage), which
    the final step to sigma = 0 returns without another model call."""

    stats: AdaptiveStats
    end_sigma: float | None = None
    end_x0: torch.Tensor | None = None

    def report(self) -> dict:
        return self.stats.report()


@SOLVERS.register("dopri5")
@dataclass
class DormandPrince(Solver):
    """Adaptive Dormand-Prince 5(4) (Dormand & Prince 1980) on the probability-flow ODE in ``variable``
    (``DopriVariable``): "inv-sigma" (default) dz/dv = D with z = x_hat / sigma, v = 1 / sigma; or "log-sigma"
    dx_hat/du = x_hat - D(x_hat, e^u), u = log sigma (0.1.0's). Errors are measured in x_hat either way.

    Each grid interval with a positive end is integrated adaptively; a step to sigma = 0 returns D.
    Local error: the embedded 4th-order difference, measured per sample in the scaled RMS norm
    sqrt(mean(((y5 - y4) / (atol + rtol max(|y|, |y5|)))^2)) (Hairer, Norsett & Wanner I, II.4).
    Step sizes: the PI controller of Hairer's DOPRI5 (``adaptive.PIController.dopri5``),
    h <- h * safety * err^{-0.17} * max(err_prev, 1e-4)^{0.04}, factor clipped to [0.2, ``factor_max``] = 10 and
    to 1 right after a rejection (Gustafsson 1991; Hairer, Norsett & Wanner I, II.4). The
    first step is chosen per sample from the problem (``h_init = None``: Hairer, Norsett & Wanner I, II.4, the
    starting step size algorithm, one extra model call) or fixed (a number, in log sigma).

    Every sample has its own steps, so a sample does not depend on its batch; the batch's NFE is that of its
    slowest sample (every attempt calls the model on the batch), and the result's ``info`` reports the accepted /
    rejected steps per sample (mean and max). FSAL: 6 model calls per attempted step after the first, and the step
    to sigma = 0 reuses the last stage's D. Order 5.
    """

    rtol: float = 1e-3
    atol: float = 1e-4
    h_init: float | None = None  # None: automatic (HNW II.4); else the first step in log sigma
    safety: float = 0.9
    factor_max: float = 10.0
    max_attempts: int = 10_000
    variable: str = "inv-sigma"

    name = "dopri5"
    order = 5
    calls_per_step = 6
    adaptive = True
    bench_tolerances = (1e-1, 1e-2, 1e-3)

    def __post_init__(self):
        if not (self.rtol > 0 and self.atol > 0):
            raise ValueError(f"dopri5 needs rtol > 0 and atol > 0, got rtol={self.rtol}, atol={self.atol}")
        if self.h_init is not None and not self.h_init > 0:
            raise ValueError(f"dopri5 h_init must be > 0 (or None: automatic), got {self.h_init}")
        if not self.factor_max > 1:
            raise ValueError(f"dopri5 factor_max must be > 1, got {self.factor_max}")
        try:
            self._variable = DopriVariable(self.variable)
        except ValueError:
            valid = ", ".join(m.value for m in DopriVariable)
            raise ValueError(f"unknown dopri5 variable {self.variable!r}; valid: {valid}") from None

    PARAM_RANGES: ClassVar[dict[str, tuple]] = {
        "rtol": (1e-15, 1.0),
        "atol": (1e-15, None),
        "safety": (0.1, 1.0),
        "max_attempts": (1, 1_000_000),
    }

    def init_state(self, ctx):
        return None

    def nfe(self, num_steps: int, final_zero: bool = True) -> int:
        raise ValueError("dopri5 is adaptive: its NFE is set by rtol / atol, not by the grid")

    def steps_for_nfe(self, nfe: int, final_zero: bool = True):
        return None

    def step(self, ctx: StepContext, x, i, state) -> StepOutput:
        sigma, sigma_next = ctx.sigma(i), ctx.sigma(i + 1)
        x_hat = x / ctx.scale(sigma)
        if state is None:
            state = DopriState(AdaptiveStats.zeros(x.shape[0]))
        if sigma_next == 0:
            if state.end_sigma == sigma:  # FSAL: the last stage already evaluated D at this state and level
                return ctx.finish(state.end_x0, state)
            return ctx.final_step(x, i, state)
        x_next, x0 = self._integrate(ctx, x_hat, sigma, sigma_next, state.stats)
        state.end_sigma, state.end_x0 = sigma_next, x0
        return StepOutput(x_next * ctx.scale(sigma_next), x0, state)

    def _integrate(self, ctx, x, sigma_from: float, sigma_to: float, stats: AdaptiveStats):
        tab, A = TABLEAUS["dopri5"], TABLEAUS["dopri5"].A
        e = [float(v) - float(w) for v, w in zip(tab.b, tab.b_err)]
        c = [float(v) for v in tab.c]
        var = self._variable
        B = x.shape[0]
        dtype, device = x.dtype, x.device
        check_tolerance(self.name, "rtol", self.rtol, dtype)
        view = (B,) + (1,) * (x.ndim - 1)
        v_end = var.of_sigma(sigma_to)
        v = torch.full((B,), var.of_sigma(sigma_from), dtype=torch.float64)
        forward = v_end > float(v[0])  # inv-sigma runs up, log-sigma down
        err_prev = torch.ones(B, dtype=torch.float64)
        controller = PIController.dopri5(self.safety, self.factor_max)
        rejected_last = torch.zeros(B, dtype=torch.bool)

        def f(zs, vs):
            """(dz/dv, D) at state zs and variable vs (per sample)."""
            sig = var.sigma(vs).to(dtype).to(device)
            xs = var.to_x(zs, vs.to(dtype).to(device).reshape(view))
            x0 = ctx.denoise(xs, sig)
            return var.derivative(xs, x0), x0

        def to_x(zs, vs):
            return var.to_x(zs, vs.to(dtype).to(device).reshape(view))

        z = var.from_x(x, v.to(dtype).to(device).reshape(view))
        k1, x0 = f(z, v)
        if self.h_init is None:
            h = self._initial_step(f, z, k1, v, view, to_x, forward)
        else:
            h = torch.full((B,), abs(self.h_init), dtype=torch.float64)
        for _ in range(self.max_attempts):
            left = (v_end - v) if forward else (v - v_end)  # distance still to go, >= 0
            active = left > 1e-12 * max(1.0, abs(v_end))
            if not bool(active.any()):
                return to_x(z, v), x0
            h = torch.where(active, torch.minimum(h, left), torch.zeros_like(h))
            if bool((active & (h <= 1e-13 * v.abs().clamp_min(1.0))).any()):
                raise RuntimeError(
                    f"dopri5: the step size underflowed at sigma={float(var.sigma(v[active].min())):g} "
                    f"(rtol={self.rtol:g}, atol={self.atol:g}): loosen the tolerances, or the model is not smooth there"
                )
            signed = h if forward else -h
            hz = signed.to(dtype).to(device).reshape(view)
            ks = [k1]
            for j in range(1, tab.stages):
                zj = z
                for m in range(j):
                    if A[j, m] != 0:
                        zj = zj + (hz * A[j, m]) * ks[m]
                kj, x0j = f(zj, v + c[j] * signed)
                ks.append(kj)
            z5 = zj  # FSAL: the last stage point is the 5th-order solution
            v_new = v + signed
            # the local error and its scale in x units at the step's ends, whatever the variable
            err = to_x(sum((hz * ej) * kj for ej, kj in zip(e, ks) if ej != 0), v_new)
            scale = self.atol + self.rtol * torch.maximum(to_x(z, v).abs(), to_x(z5, v_new).abs())
            err_norm = (err / scale).pow(2).reshape(B, -1).mean(1).sqrt().to(torch.float64)
            accept = active & (err_norm <= 1.0)
            factor, safe = controller.factor(err_norm, err_prev, accept)
            acc = accept.reshape(view)
            z = torch.where(acc, z5, z)
            k1 = torch.where(acc, ks[-1], k1)
            x0 = torch.where(acc, x0j, x0)
            v = torch.where(accept, v_new, v)
            err_prev = torch.where(accept, safe, err_prev)
            stats.count(accept, active)
            # no growth right after a rejection (Hairer, Norsett & Wanner's DOPRI5)
            factor = torch.where(rejected_last & accept, factor.clamp_max(1.0), factor)
            rejected_last = torch.where(active, ~accept, rejected_last)
            h = torch.where(active, h * factor, h)
        raise RuntimeError(f"dopri5 did not reach sigma={sigma_to:g} in {self.max_attempts} attempts")

    def _initial_step(self, f, z, k1, v, view, to_x, forward: bool):
        """|h| of the first step per sample (Hairer, Norsett & Wanner I, II.4, "starting step size"): an Euler
        step of 1 % of the solution's scale, a second derivative estimate from one more model call, and the
        step whose local error would be 1 % of the tolerance; never more than 100 times the first guess.
        Norms in x units, as the error control's."""
        B = z.shape[0]
        scale = self.atol + self.rtol * to_x(z, v).abs()

        def norm(w):
            return (to_x(w, v) / scale).pow(2).reshape(B, -1).mean(1).sqrt().to(torch.float64)

        d0, d1 = norm(z), norm(k1)
        h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1.clamp_min(1e-300))
        signed = h0 if forward else -h0
        k2, _ = f(z + signed.to(z.dtype).to(z.device).reshape(view) * k1, v + signed)
        d2 = norm(k2 - k1) / h0
        top = torch.maximum(d1, d2)
        h1 = torch.where(top > 1e-15, (0.01 / top.clamp_min(1e-300)) ** (1 / 5), torch.clamp(h0 * 1e-3, min=1e-6))
        return torch.minimum(100 * h0, h1)

    def report(self, state) -> dict:
        return {} if state is None else state.report()

    def with_tolerance(self, tol: float) -> "DormandPrince":
        return dataclasses.replace(self, rtol=tol, atol=tol / 10)
