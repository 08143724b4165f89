"""Scoring a cell on an analytic problem: the fixed evaluation set, drawn once, and its metrics.

Unconditional problems (``problems.PROBLEMS``) are scored against the exact density and the exact
probability-flow ODE solution from the same noise; conditional (OUVE) problems against the clean
signal and the exact posterior p(x0 | y). The metric names and directions live in
``metrics.registry``.
"""

from __future__ import annotations

import math
import time

import torch
from torch import Tensor

from ..denoisers import LevelShift
from ..metrics import reference_ode_solution, sliced_wasserstein2
from ..noise import SampleNoise
from ..problems import make_conditional_problem, make_problem
from ..processes import Process
from ..sampling import prior_sample, sample
from .config import DTYPES, ExperimentConfig

__all__ = ["summary", "AnalyticEvaluation"]


def summary(values: Tensor, keep: bool = False) -> dict:
    """mean, std (0 for one value) and count of per-sample values; ``keep``: the values too (per file, for the
    paired statistics of the speech tables)."""
    v = values.to(torch.float64)
    out = {"mean": float(v.mean()), "std": float(v.std()) if len(v) > 1 else 0.0, "n": int(len(v))}
    if keep:
        out["values"] = [float(a) for a in v]
    return out


class AnalyticEvaluation:
    """Draws the fixed evaluation set once and scores the samples of every cell."""

    def __init__(self, config: ExperimentConfig, base: Process):
        self.config = config
        self.base = base
        self.dtype = DTYPES[config.dtype]
        g = torch.Generator().manual_seed(10_007 + config.seed)
        if config.conditional:
            prob = make_conditional_problem(config.problem)
            n = config.samples or prob.num_samples
            self.dim = prob.dim
            self.x0, self.y = prob.joint.sample(n, g)
            self.posterior = prob.joint.posterior(self.y)
            self.denoiser = prob.joint.residual_denoiser().to(self.dtype)
            self.cond = {"y": self.y.to(self.dtype)}
            self.reference = self.posterior.sample(n, torch.Generator().manual_seed(20_011 + config.seed))
        else:
            prob = make_problem(config.problem)
            n = config.samples or prob.num_samples
            self.dim = prob.dim
            self.model = prob.model
            self.denoiser = prob.model.to(self.dtype)
            self.cond = {}
            self.reference = prob.model.sample(n, g)
        self.n = n
        self.seeds = range(config.seed, config.seed + n)
        self._ode_ref: dict[float, Tensor] = {}

    def baselines(self) -> dict[str, dict]:
        """Reference rows: the noisy input and the exact posterior mean (conditional problems)."""
        if not self.config.conditional:
            return {}
        return {
            "noisy input y": self.score(self.y, None),
            "exact posterior mean": self.score(self.posterior.mean(), None),
        }

    def run(self, process: Process, grid: Tensor, solver, model_sigmas=None) -> dict:
        """Sample every seed down ``grid`` and score the samples (``model_sigmas``: a calibrated grid file's
        model levels, ``denoisers.LevelShift``)."""
        noise = SampleNoise(self.seeds, dtype=self.dtype)
        x_T = prior_sample(process, float(grid[0]), noise, (self.dim,))
        start = time.perf_counter()
        denoiser = self.denoiser if model_sigmas is None else LevelShift(self.denoiser, grid, model_sigmas)
        result = sample(
            denoiser,
            x_T,
            grid,
            solver,
            process=process,
            noise=noise if solver.stochastic else None,
            cond=self.cond,
        )
        seconds = time.perf_counter() - start
        x = result.x.to(torch.float64)
        x_T_hat = None
        if self.config.conditional:
            x = x + self.y  # the residual back to data (s(0) = 1 at the final level 0)
        elif not solver.stochastic:
            x_T_hat = (float(grid[0]), x_T.to(torch.float64) / float(process.scale(float(grid[0]))))
        return {"nfe": result.nfe, "seconds": seconds, "metrics": self.score(x, x_T_hat)}

    def score(self, x: Tensor, x_T_hat: tuple | None) -> dict:
        x = x.to(torch.float64)
        return {m: getattr(self, f"_{m}")(x, x_T_hat) for m in self.config.metrics}

    # one method per metric of metrics.registry that needs an exact density or posterior
    def _snr_db(self, x, _):
        err = (x - self.x0).pow(2).sum(1)
        return summary(10 * torch.log10(self.x0.pow(2).sum(1) / err.clamp_min(1e-30)))

    def _rms_posterior_mean(self, x, _):
        return summary((x - self.posterior.mean()).pow(2).mean(1).sqrt())

    def _posterior_nll_gap(self, x, _):
        return summary(-self.posterior.log_prob(x) + self.posterior.log_prob(self.reference))

    def _nll_gap(self, x, _):
        return summary(-self.model.log_prob(x) + self.model.log_prob(self.reference))

    def _sw2(self, x, _):
        return {"mean": sliced_wasserstein2(x, self.reference), "std": math.nan, "n": int(len(x))}

    def _rms_ode(self, x, x_T_hat):
        if x_T_hat is None:
            return {"mean": math.nan, "std": math.nan, "n": 0}
        sigma_start, start = x_T_hat
        if sigma_start not in self._ode_ref:
            self._ode_ref[sigma_start] = reference_ode_solution(self.model, start, sigma_start, 0.0)
        return summary((x - self._ode_ref[sigma_start]).pow(2).mean(1).sqrt())
