"""A solver's steps chosen by dynamic programming over a fine candidate set, scored by the solver's real steps
(Watson et al. 2021, "Learning to Efficiently Sample from Diffusion Probabilistic Models", Sec. 3; GITS, Chen
et al. 2024, "On the trajectory regularity of ODE-based diffusion sampling", Sec. 4, does the same on a teacher
trajectory).

Candidates sigma_0 > ... > sigma_{M-1} = sigma_min > sigma_M = 0 (Karras rho 7); the teacher's states x_m at
every candidate come from a tight adaptive solve through them. The cost of a jump m -> n is the mean squared
distance between the teacher's x_n and one step of the solver from the teacher's x_m -- run by the solver
itself, so a multistep solver takes the step it really takes: with its history from the teacher's state at
the previous node of the path (state-augmented DP, with the previous node of each state taken from the
best path into it; Watson et al.'s recursion is the special case without history):

    C[k][n] = min_m C[k-1][m] + cost(parent[k-1][m] -> m -> n),    C[0][0] = 0.

One history node is exact for two-step methods (DPM-Solver++(2M), UniPC-2, DEIS and LMS of order 2) and an
approximation for deeper histories (iPNDM, order-3 multistep), whose steps use more than the DP scores. The
summed local error is not the global error either (a step's error is weighted by how much of it reaches the
end, exactly only for Gaussian data): ``calibration.learn`` fits the global error and does better.

The last step is always sigma_min -> 0: a grid that stops early and jumps to 0 has a small summed local error
(the jump returns the posterior mean, close to every teacher end point in mean square) but over-concentrated
samples, so it is not a candidate -- as the built-in grids, a DP grid ends at sigma_min. O(K M^2) solver
steps; the model is called only where a step needs it at a state that is not the teacher's.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..grids import karras
from ..sampling import sample
from ..solvers import Solver, make_solver
from .teacher import Target

__all__ = ["MAX_CANDIDATES", "least_cost_path", "TeacherTrajectory", "teacher_trajectory", "DPGrid", "dp_grid"]

MAX_CANDIDATES = 2000  # O(K M^2) solver steps: 2000 candidates is already hours


def least_cost_path(cost: np.ndarray, num_edges: int) -> tuple[list[int], float]:
    """Least-cost path 0 -> M through increasing indices with exactly ``num_edges`` edges (no history).

    ``cost[i, j]`` for i < j (entries with j <= i and non-finite entries are never used).
    Returns the visited indices (length num_edges + 1) and the total cost.
    """
    cost = np.asarray(cost, dtype=np.float64)
    m = cost.shape[0] - 1
    if cost.shape != (m + 1, m + 1):
        raise ValueError(f"cost must be square, got shape {cost.shape}")
    if not 1 <= num_edges <= m:
        raise ValueError(f"need 1 <= num_edges <= {m} (candidates - 1), got {num_edges}")
    best = np.full((num_edges + 1, m + 1), math.inf)
    parent = np.full((num_edges + 1, m + 1), -1, dtype=np.int64)
    best[0, 0] = 0.0
    upper = np.triu(np.where(np.isfinite(cost), cost, math.inf), k=1)
    upper[np.tril_indices(m + 1)] = math.inf
    for k in range(1, num_edges + 1):
        totals = best[k - 1][:, None] + upper  # (from i, to j)
        parent[k] = np.argmin(totals, axis=0)
        best[k] = totals[parent[k], np.arange(m + 1)]
    if not math.isfinite(best[num_edges, m]):
        raise ValueError("no finite path with that many edges")
    path = [m]
    for k in range(num_edges, 0, -1):
        path.append(int(parent[k, path[-1]]))
    return path[::-1], float(best[num_edges, m])


@dataclass
class TeacherTrajectory:
    """The teacher's states ``x[m]`` (process coordinates) at every candidate level, and D at the positive ones."""

    levels: Tensor
    x: list[Tensor]
    d: list[Tensor]
    cond: dict
    data_var: float  # mean per-coordinate variance of the teacher's end points


def teacher_trajectory(target: Target, seeds, levels: Tensor, rtol: float | None = None) -> TeacherTrajectory:
    rtol = rtol if rtol is not None else (1e-6 if target.dtype == torch.float64 else 1e-5)
    x_T, cond, _ = target.draw(seeds)
    states = [x_T]
    solver = make_solver("dopri5", rtol=rtol, atol=rtol / 10)
    sample(
        target.denoiser,
        x_T,
        levels,
        solver,
        process=target.process,
        cond=cond,
        callback=lambda rec: states.append(rec.x),
    )
    d = []
    with torch.no_grad():
        for m, sigma in enumerate(levels[:-1].tolist()):
            s = float(target.process.scale(sigma))
            d.append(target.denoiser(states[m] / s, torch.tensor(sigma, dtype=x_T.dtype), **cond))
    end = states[-1].reshape(len(states[-1]), -1).to(torch.float64)
    return TeacherTrajectory(levels, states, d, cond, float(end.var(0).mean()))


class _CachedAtLevels:
    """The model, except at the levels whose D at the teacher's state is known (those calls are the teacher's)."""

    def __init__(self, denoiser, known: dict):
        self.denoiser, self.known = denoiser, known
        self.dtype = getattr(denoiser, "dtype", None)

    def __call__(self, x, sigma, **cond):
        if sigma.ndim == 0:
            hit = self.known.get(float(sigma))
            if hit is not None:
                return hit
        return self.denoiser(x, sigma, **cond)


class _TeacherState:
    """A hook that puts the teacher's state in place at grid level ``k`` (the history node's step is thrown away)."""

    needs_noise = False

    def __init__(self, k: int, x: Tensor):
        self.k, self.x = k, x

    def at_level(self, ctx, x, k):
        return self.x if k == self.k else x


def jump_cost(target: Target, solver: Solver, teacher: TeacherTrajectory, p: int | None, i: int, j: int) -> float:
    """Mean squared distance to the teacher's x_j of the solver's step i -> j, with its history from the
    teacher's state at p (None: a fresh start at i)."""
    lv = teacher.levels
    if p is None:
        grid, start, hooks, known = lv[[i, j]], teacher.x[i], (), {float(lv[i]): teacher.d[i]}
    else:
        grid, start = lv[[p, i, j]], teacher.x[p]
        hooks = (_TeacherState(1, teacher.x[i]),)
        known = {float(lv[p]): teacher.d[p], float(lv[i]): teacher.d[i]}
    out = sample(
        _CachedAtLevels(target.denoiser, known),
        start,
        grid,
        solver,
        process=target.process,
        cond=teacher.cond,
        hooks=hooks,
        nonfinite="ignore",
    ).x
    # the error a step leaves at sigma_j reaches the end shrunk by the flow: by sqrt(v / (v + sigma_j^2)) for
    # Gaussian data of variance v (the probability-flow ODE keeps (x - mu) / sqrt(v + sigma^2)), so its squared
    # size counts with the weight v / (v + sigma_j^2)
    sigma_j = float(lv[j])
    weight = teacher.data_var / (teacher.data_var + sigma_j**2)
    err = weight * float((out - teacher.x[j]).pow(2).mean())
    return err if math.isfinite(err) else math.inf


def check_dp_limits(steps: int, candidates: int) -> None:
    """Refuse impossible or runaway requests before any model call."""
    if not isinstance(candidates, int) or isinstance(candidates, bool) or not 2 <= candidates <= MAX_CANDIDATES:
        raise ValueError(f"candidates must be an integer in [2, {MAX_CANDIDATES}], got {candidates!r}")
    if not isinstance(steps, int) or isinstance(steps, bool) or not 2 <= steps <= candidates:
        raise ValueError(
            f"steps must be an integer in [2, candidates={candidates}], got {steps!r} (the last step is "
            "sigma_min -> 0, so a DP grid has at least 2 steps, and each other step ends on a candidate)"
        )


def dp_evaluations(steps: int, candidates: int) -> int:
    """The solver trial steps the DP makes (its progress bar's total)."""
    last, inner = candidates - 1, steps - 1

    def reachable(m):  # the nodes a path of m edges from 0 can end on, leaving room for the rest
        return range(0, 1) if m == 0 else range(m, last - (inner - m) + 1)

    trials = sum(last - (inner - k) - i for k in range(1, inner + 1) for i in reachable(k - 1))
    return trials + 1  # and the final step sigma_min -> 0


@dataclass
class DPGrid:
    grid: Tensor
    cost: float  # summed local mean squared error of the path
    candidates: int
    history: bool


def dp_grid(
    target: Target,
    solver: Solver | str,
    steps: int,
    seeds,
    *,
    candidates: int = 200,
    history: bool | None = None,
    teacher_rtol: float | None = None,
    progress=None,
) -> DPGrid:
    """The ``steps``-step grid among ``candidates`` Karras levels (then 0) with the least summed local error of
    ``solver`` against the teacher from ``seeds``. ``history``: score each step with the solver's history from
    the path's previous node (default: for every solver with ``calls_per_step`` 1, i.e. the multistep and
    single-call solvers; a fresh start otherwise). Limits are checked before any work."""
    solver = make_solver(solver) if isinstance(solver, str) else solver
    if solver.adaptive or solver.stochastic:
        raise ValueError(
            f"{solver.describe()} is {'adaptive' if solver.adaptive else 'stochastic'}: "
            "the DP needs a deterministic fixed-step solver"
        )
    check_dp_limits(steps, candidates)
    history = solver.calls_per_step == 1 if history is None else history
    # inside a run a step keeps its full order; a two-step trial run would lower it as a run's final step
    inner_solver = solver
    if history and dataclasses.is_dataclass(solver) and hasattr(solver, "lower_order_final"):
        inner_solver = dataclasses.replace(solver, lower_order_final=False)
    levels = karras(candidates, target.process, sigma_min=target.sigma_min, sigma_max=target.sigma_max)
    teacher = teacher_trajectory(target, seeds, levels, teacher_rtol)
    last = candidates - 1  # sigma_min; candidates is 0
    inner = steps - 1  # edges from 0 to sigma_min
    best = np.full((inner + 1, candidates), math.inf)
    parent = np.full((inner + 1, candidates), -1, dtype=np.int64)
    best[0, 0] = 0.0
    for k in range(1, inner + 1):
        for i in range(k - 1, last):
            if not math.isfinite(best[k - 1, i]):
                continue
            p = int(parent[k - 1, i]) if history and k > 1 else None
            # j leaves room for the remaining inner - k edges before sigma_min
            for j in range(i + 1, last - (inner - k) + 1):
                total = best[k - 1, i] + jump_cost(target, inner_solver, teacher, p, i, j)
                if total < best[k, j]:
                    best[k, j], parent[k, j] = total, i
                if progress is not None:
                    progress.update(1)
    p = int(parent[inner, last]) if history else None  # the node before sigma_min on the best path
    total = best[inner, last] + jump_cost(target, solver, teacher, p, last, candidates)
    if progress is not None:
        progress.update(1)
    if not math.isfinite(total):
        raise ValueError(f"{solver.describe()} diverges on every {steps}-step path of the candidates")
    path = [last]
    for k in range(inner, 0, -1):
        path.append(int(parent[k, path[-1]]))
    path = path[::-1] + [candidates]
    return DPGrid(levels[path].clone(), float(total), candidates + 1, history)
