"""Gotta Go Fast (Jolicoeur-Martineau et al. 2021, Alg. 1): adaptive step sizes for the reverse SDE."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from .adaptive import AdaptiveStats, PIController
from .base import SOLVERS, Solver, StepContext, StepOutput, score_from_denoised

__all__ = ["GottaGoFast"]


@SOLVERS.register("ggf")
@dataclass
class GottaGoFast(Solver):
    """Adaptive SDE solver of Jolicoeur-Martineau et al. 2021 (Alg. 1), in the process's time t.

    Per attempted step of size h (reverse time), with one noise draw z shared by both stages:
        x'  = x - h r(x, t) + g(t) sqrt(h) z                     (Euler-Maruyama)
        x~  = x - h r(x', t - h) + g(t - h) sqrt(h) z
        x'' = (x' + x~) / 2                                        (improved Euler)
    with r(x, t) = f(t) x - g(t)^2 grad log p_t(x). Error E = ||(x' - x'') / delta||_2 / sqrt(n),
    delta = max(abstol, reltol max(|x'|, |x'_prev|)) (their scaled L2 norm). If E <= 1 the step is
    accepted (x <- x'' with ``extrapolation``, else x'), and always h <- min(t - t_end, theta h E^{-r}).
    Every sample has its own t and h; its noise stream advances once per attempt of the batch, so a
    sample depends on its batch only through how many draws follow its last step, which never reach
    it: the grid must have one positive interval (plus an optional final 0, which returns D: the
    paper's final denoising step). 2 model calls per attempt; counted NFE and step counts reported.
    """

    abstol: float = 0.0078
    reltol: float = 0.05
    h_init: float = 0.01
    theta: float = 0.9
    r: float = 0.9
    PARAM_RANGES: ClassVar[dict[str, tuple]] = {
        "abstol": (0.0, None),
        "reltol": (0.0, None),
        "theta": (0.0, 1.0),
        "r": (0.0, None),
    }
    extrapolation: bool = True
    max_attempts: int = 100_000

    name = "ggf"
    order = 1
    calls_per_step = 2
    stochastic = True
    adaptive = True
    bench_tolerances = (0.1, 0.05, 0.02)

    def nfe(self, num_steps: int, final_zero: bool = True) -> int:
        raise ValueError("ggf is adaptive: its NFE is set by abstol / reltol, not by the grid")

    def steps_for_nfe(self, nfe: int, final_zero: bool = True):
        return None

    def report(self, state) -> dict:
        return {} if state is None else state.report()

    def with_tolerance(self, tol: float) -> "GottaGoFast":
        """reltol = tol; abstol keeps the paper's 0.0078 (data scaled to [-1, 1])."""
        return dataclasses.replace(self, reltol=tol)

    def step(self, ctx: StepContext, x, i, state) -> StepOutput:
        sigma, sigma_next = ctx.sigma(i), ctx.sigma(i + 1)
        if state is None:
            positive = int((ctx.sigmas > 0).sum())
            if positive != 2:
                raise ValueError(
                    "ggf integrates one interval adaptively: give a grid [sigma_max, sigma_min] or "
                    f"[sigma_max, sigma_min, 0], got {ctx.sigmas.tolist()}"
                )
            state = AdaptiveStats.zeros(x.shape[0])
        if sigma_next == 0:
            return ctx.final_step(x, i, state)
        x, x0 = self._integrate(ctx, x, ctx.t(sigma), ctx.t(sigma_next), state)
        return StepOutput(x, x0, state)

    def _integrate(self, ctx: StepContext, x, t0: float, t1: float, stats: AdaptiveStats):
        p = ctx.process
        B = x.shape[0]
        view = (B,) + (1,) * (x.ndim - 1)
        dtype = x.dtype
        t = torch.full((B,), t0, dtype=torch.float64)
        h = torch.full((B,), self.h_init, dtype=torch.float64)
        x_prev = x.clone()
        n = x[0].numel()
        # h <- theta h E^-r after every attempt, accepted or not: an I controller without clipping
        controller = PIController(alpha=self.r, safety=self.theta)

        def reverse_drift(xs, ts):
            sig = p.sigma(ts)
            s = p.s(ts)
            x0 = ctx.denoise(xs / s.to(dtype).reshape(view), sig.to(dtype))
            s_, sig_ = s.to(dtype).reshape(view), sig.to(dtype).reshape(view)
            score = score_from_denoised(xs, x0, s_, sig_)
            f = p.drift(ts).to(dtype).reshape(view)
            g = p.diffusion(ts).to(dtype).reshape(view)
            return f * xs - g**2 * score, g, x0

        x0 = None
        for _ in range(self.max_attempts):
            active = t > t1 + 1e-12
            if not bool(active.any()):
                return x, x0
            h = torch.where(active, torch.minimum(h, t - t1), torch.zeros_like(h))
            z = ctx.randn_like(x)
            hv = h.to(dtype).reshape(view)
            drift, g, x0_a = reverse_drift(x, t)
            x1 = x - hv * drift + g * torch.sqrt(hv) * z
            drift2, g2, x0_b = reverse_drift(x1, t - h)
            x_tilde = x - hv * drift2 + g2 * torch.sqrt(hv) * z
            x2 = 0.5 * (x1 + x_tilde)
            delta = torch.maximum(torch.full_like(x1, self.abstol), self.reltol * torch.maximum(x1.abs(), x_prev.abs()))
            err = ((x1 - x2) / delta).reshape(B, -1).norm(dim=1).to(torch.float64) / math.sqrt(n)
            accept = active & (err <= 1.0)
            acc = accept.reshape(view)
            x = torch.where(acc, x2 if self.extrapolation else x1, x)
            x_prev = torch.where(acc, x1, x_prev)
            x0 = x0_b if x0 is None else torch.where(acc, x0_b, x0)
            t = torch.where(accept, t - h, t)
            stats.count(accept, active)
            factor, _ = controller.factor(err, err, accept)
            h_new = h * factor
            h = torch.where(active, torch.minimum(h_new, (t - t1).clamp_min(0)), h)
            h = torch.where(active & (h <= 0), torch.full_like(h, self.h_init), h)
        raise RuntimeError(f"ggf did not reach t={t1:g} in {self.max_attempts} attempts")
