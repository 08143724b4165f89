"""A few-step sampler's grid (and, optionally, the levels its model is evaluated at) learned against a teacher.

Parameterisation: the grid's positive levels below sigma_max are free log-sigma increments (LD3, Tong et al.
2025, "Learning to discretize denoising diffusion ODEs", Sec. 3 parameterises the steps freely and fits them to
a teacher's end points on ~100 samples): with n free levels and n + 1 logits theta (the last fixed at 0),

    log sigma_k = log sigma_max - (log sigma_max - log sigma_floor) * sum_{j <= k} softmax(theta)_j,

so every theta is a valid, strictly decreasing grid between sigma_max and sigma_floor, ending at 0. The last
positive level is free too: where the solver's last step keeps its order, it need not be sigma_min.
``GRID_SHIFT`` adds one log-offset per positive level for the level the model is evaluated at
(``denoisers.LevelShift``).

Loss: the RMS distance of the sampler's end points to the teacher's on the calibration seeds, with the real
sampler (any deterministic solver, its history and its final step, exactly as it will run). Optimiser:
Nelder-Mead with Gao & Han's (2012) dimension-adapted coefficients: derivative-free, so it needs no
differentiable copy of each solver (samplerlab's solvers run on float levels); with <= 20 parameters it
converges in a few hundred to a few thousand sampler runs. Selection and early stopping use separate
validation seeds: the kept parameters are those with the lowest validation RMS among those whose validation
sliced W2 distance to the teacher's samples is at most ``sw2_limit`` times the initial grid's (a grid that
only wins by collapsing samples toward their mean, the failure of trajectory-error fits, is not kept).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import minimize
from torch import Tensor

from ..denoisers import LevelShift
from ..io import atomic_write_text
from ..metrics.analytic import sliced_wasserstein2
from ..sampling import sample
from ..solvers import Solver
from .teacher import Target, TeacherSet

__all__ = ["CalibrationMethod", "GridParameters", "Scores", "score", "run_sampler", "LearnedSampler", "learn"]


class CalibrationMethod(enum.Enum):
    """What ``samplerlab calibrate`` fits."""

    DP = "dp"  # the levels by dynamic programming over candidates, scored by the solver's steps (``dp``)
    GRID = "grid"  # the levels only, fitted to the teacher's end points
    GRID_SHIFT = "grid+shift"  # the levels and the level the model sees at each (one log-offset per level)
    # and then the solver's own coefficients (S4S-style; solvers with a ``coefficients`` field: DPM-Solver(++) 2M)
    GRID_SHIFT_COEFFICIENTS = "grid+shift+coefficients"

    @classmethod
    def parse(cls, value) -> "CalibrationMethod":
        try:
            return value if isinstance(value, cls) else cls(value)
        except ValueError:
            raise ValueError(
                f"unknown calibration method {value!r}; valid: {', '.join(m.value for m in cls)}"
            ) from None


@dataclass(frozen=True)
class GridParameters:
    """Maps free parameters to a grid of ``steps`` steps from sigma_max to 0 (module docstring)."""

    sigma_max: float
    sigma_floor: float
    steps: int

    @property
    def free_levels(self) -> int:
        return self.steps - 1

    def grid(self, theta: np.ndarray) -> Tensor:
        logits = np.concatenate([np.asarray(theta, dtype=np.float64)[: self.free_levels], [0.0]])
        w = np.exp(logits - logits.max())
        fractions = np.cumsum(w / w.sum())[:-1]
        span = math.log(self.sigma_max) - math.log(self.sigma_floor)
        levels = np.exp(math.log(self.sigma_max) - span * fractions)
        return torch.tensor([self.sigma_max, *levels.tolist(), 0.0], dtype=torch.float64)

    def theta_of(self, grid: Tensor) -> np.ndarray:
        """The parameters of an existing grid (its last positive level nudged above the floor if on it)."""
        logs = torch.log(grid[:-1].to(torch.float64)).numpy()
        gaps = -np.diff(logs)
        rest = logs[-1] - math.log(self.sigma_floor)
        span = math.log(self.sigma_max) - math.log(self.sigma_floor)
        rest = max(rest, 0.02 * span)
        return np.log(gaps) - math.log(rest)


@dataclass(frozen=True)
class Scores:
    """A sampler's errors on a teacher set: ``rms`` to the teacher's end points (trajectory error), ``sw2`` the
    sliced W2 distance between its samples and the teacher's (distribution error)."""

    rms: float
    sw2: float


def run_sampler(target: Target, teacher: TeacherSet, solver: Solver, grid: Tensor, model_sigmas=None) -> Tensor:
    denoiser = target.denoiser if model_sigmas is None else LevelShift(target.denoiser, grid, model_sigmas)
    return sample(denoiser, teacher.x_T, grid, solver, process=target.process, cond=teacher.cond).x


def score(samples: Tensor, teacher: TeacherSet) -> Scores:
    reference = teacher.x_0.to(torch.float64)
    rms = float((samples.to(torch.float64) - reference).pow(2).mean().sqrt())
    sw2 = sliced_wasserstein2(samples, reference, generator=torch.Generator().manual_seed(0))
    return Scores(rms if math.isfinite(rms) else math.inf, sw2 if math.isfinite(sw2) else math.inf)


@dataclass
class LearnedSampler:
    grid: Tensor
    model_sigmas: list[float] | None
    validation: Scores
    initial_validation: Scores
    evaluations: int
    trace: list[dict] = field(default_factory=list)  # validation checks: evaluations, fit loss, scores
    coefficients: tuple[float, ...] | None = None  # the solver's calibrated coefficients (S4S-style stage)


class _Stop(Exception):
    """Raised inside the objective to end the optimiser early (patience, interruption handled outside)."""


def learn(
    target: Target,
    solver: Solver,
    steps: int,
    method: CalibrationMethod,
    fit: TeacherSet,
    validation: TeacherSet,
    initial_grid: Tensor,
    *,
    initial_shifts: list[float] | None = None,
    max_evaluations: int = 1500,
    check_every: int = 50,
    patience: int = 8,
    sw2_limit: float = 1.1,
    sw2_reference: float | None = None,
    state_path: str | Path | None = None,
    state_key: str = "",
    progress=None,
) -> LearnedSampler:
    """Fit from ``initial_grid`` (and ``initial_shifts``, the levels its model sees): GRID the levels, GRID_SHIFT
    the levels and one log-offset per positive level, GRID_SHIFT_COEFFICIENTS the solver's ``coefficients``
    alone (one per step, from 0: the solver as published), with the grid and shifts held. ``state_path``
    makes the run resumable: the best parameters so far are written there (atomically) at every validation
    check, and a run with the same ``state_key`` starts from them with the evaluations it has left."""
    params = GridParameters(float(initial_grid[0]), target.sigma_min, steps)
    n_grid = params.free_levels
    shifted = method is CalibrationMethod.GRID_SHIFT
    coefficients = method is CalibrationMethod.GRID_SHIFT_COEFFICIENTS
    if coefficients and not hasattr(solver, "coefficients"):
        raise ValueError(f"{solver.describe()} has no coefficients to calibrate; DPM-Solver(++) 2M has")
    if coefficients:
        theta0 = np.zeros(steps)
    else:
        theta0 = params.theta_of(initial_grid)
        if shifted:
            start = (
                np.zeros(steps)
                if initial_shifts is None
                else np.log(np.asarray(initial_shifts, dtype=np.float64) / initial_grid[:-1].numpy())
            )
            theta0 = np.concatenate([theta0, start])  # one offset per positive level

    def decode(theta):
        """(grid, model levels or None, solver) of a parameter vector."""
        if coefficients:
            return initial_grid, initial_shifts, dataclasses.replace(solver, coefficients=tuple(theta.tolist()))
        grid = params.grid(theta[:n_grid])
        shifts = None
        if shifted:
            shifts = (grid[:-1] * torch.exp(torch.as_tensor(theta[n_grid:], dtype=torch.float64))).tolist()
        return grid, shifts, solver

    def scores_on(teacher, theta):
        grid, shifts, run_solver = decode(theta)
        return score(run_sampler(target, teacher, run_solver, grid, shifts), teacher)

    initial = scores_on(validation, theta0)
    # the distribution guard's reference: the caller's (the baseline grid, across stages) or this start's
    reference_sw2 = initial.sw2 if sw2_reference is None else sw2_reference
    state = {
        "key": state_key,
        "evaluations": 0,
        "fit_theta": theta0.tolist(),
        "best_theta": theta0.tolist(),
        "best_rms": initial.rms,
        "best_sw2": initial.sw2,
        "trace": [],
    }
    if state_path is not None and Path(state_path).exists():
        try:
            saved = json.loads(Path(state_path).read_text())
        except ValueError:
            saved = {}
        if saved.get("key") == state_key and len(saved.get("fit_theta", ())) == len(theta0):
            state = saved
    best = {"fit": math.inf, "theta": np.array(state["fit_theta"]), "checked": None}
    checks_without_gain = [0]

    def save():
        if state_path is not None:
            atomic_write_text(state_path, json.dumps(state) + "\n")

    def check():
        theta = best["theta"]
        if best["checked"] is not None and np.array_equal(best["checked"], theta):
            checks_without_gain[0] += 1
        else:
            best["checked"] = theta.copy()
            val = scores_on(validation, theta)
            state["trace"].append(
                {"evaluations": state["evaluations"], "fit_rms": best["fit"], "val_rms": val.rms, "val_sw2": val.sw2}
            )
            if val.rms < state["best_rms"] and val.sw2 <= sw2_limit * reference_sw2:
                state.update(best_theta=theta.tolist(), best_rms=val.rms, best_sw2=val.sw2)
                checks_without_gain[0] = 0
            else:
                checks_without_gain[0] += 1
        state["fit_theta"] = theta.tolist()
        save()
        if checks_without_gain[0] >= patience:
            raise _Stop

    def objective(theta):
        grid, shifts, run_solver = decode(theta)
        out = run_sampler(target, fit, run_solver, grid, shifts)
        loss = float((out.to(torch.float64) - fit.x_0.to(torch.float64)).pow(2).mean().sqrt())
        loss = loss if math.isfinite(loss) else math.inf
        state["evaluations"] += 1
        if loss < best["fit"]:
            best.update(fit=loss, theta=np.array(theta))
        if progress is not None:
            progress.update(1)
            progress.set_postfix(fit=f"{best['fit']:.4g}", val=f"{state['best_rms']:.4g}", refresh=False)
        if state["evaluations"] % check_every == 0:
            check()
        return loss

    try:
        # restarted from the best point with a fresh simplex while a round still gains (Nelder-Mead's simplex
        # collapses in narrow valleys; restarting is the usual remedy, Kelley 1999)
        while state["evaluations"] < max_evaluations:
            start = np.array(state["fit_theta"] if best["fit"] == math.inf else best["theta"])
            before = best["fit"]
            simplex = np.vstack([start] + [start + 0.15 * np.eye(len(start))[i] for i in range(len(start))])
            options = {"adaptive": True, "xatol": 1e-4, "fatol": 1e-9, "initial_simplex": simplex}
            options["maxfev"] = max_evaluations - state["evaluations"]
            minimize(objective, start, method="Nelder-Mead", options=options)
            check()
            if not best["fit"] < before * (1 - 1e-3):
                break
    except _Stop:
        pass
    grid, shifts, best_solver = decode(np.array(state["best_theta"]))
    return LearnedSampler(
        grid,
        shifts,
        Scores(state["best_rms"], state["best_sw2"]),
        initial,
        state["evaluations"],
        state["trace"],
        getattr(best_solver, "coefficients", None) if coefficients else None,
    )
