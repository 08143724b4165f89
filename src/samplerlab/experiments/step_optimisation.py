"""Choose K sampling steps by dynamic programming over a fine candidate grid (Watson et al. 2021).

Given candidate levels sigma_0 > ... > sigma_M, the cost of a jump i -> j is the solver's local error:
one solver step from the reference state at sigma_i to sigma_j, compared with the reference state at
sigma_j (mean squared distance over a calibration batch). The reference states come from a tight
adaptive solve through the candidates (dopri5). The optimal grid is the least-cost path from 0 to M
with exactly K edges, found by the recursion

    C[k][j] = min_{i < j} C[k-1][i] + cost(i, j),   C[0][0] = 0

(Watson et al. 2021, "Learning to Efficiently Sample from Diffusion Probabilistic Models", Sec. 3, where
the cost is a per-step ELBO term instead). O(K M^2) time. Multistep solvers are scored by their
first step from a fresh state.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..grids import karras, saved_grid_path, validate_grid
from ..io import atomic_write_text
from ..noise import SampleNoise
from ..processes import Process
from ..sampling import prior_sample, sample
from ..solvers import Solver, make_solver

__all__ = ["least_cost_path", "jump_costs", "OptimisedGrid", "optimise_steps", "save_grid"]


def least_cost_path(cost: np.ndarray, num_edges: int) -> tuple[list[int], float]:
    """Least-cost path 0 -> M through increasing indices with exactly ``num_edges`` edges.

    ``cost[i, j]`` for i < j (entries with j <= i and non-finite entries are never used).
    Returns the visited indices (length num_edges + 1) and the total cost.
    """
    cost = np.asarray(cost, dtype=np.float64)
    m = cost.shape[0] - 1
    if cost.shape != (m + 1, m + 1):
        raise ValueError(f"cost must be square, got shape {cost.shape}")
    if not 1 <= num_edges <= m:
        raise ValueError(f"need 1 <= num_edges <= {m} (candidates - 1), got {num_edges}")
    inf = math.inf
    best = np.full((num_edges + 1, m + 1), inf)
    parent = np.full((num_edges + 1, m + 1), -1, dtype=np.int64)
    best[0, 0] = 0.0
    upper = np.triu(np.where(np.isfinite(cost), cost, inf), k=1)
    upper[np.tril_indices(m + 1)] = inf
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


def jump_costs(
    denoiser,
    solver: Solver,
    process: Process,
    candidates: torch.Tensor,
    states: list[torch.Tensor],
    max_jump: int | None = None,
) -> np.ndarray:
    """cost[i, j] = mean ||one solver step sigma_i -> sigma_j from states[i] - states[j]||^2 / dim."""
    m = len(candidates) - 1
    cost = np.full((m + 1, m + 1), np.inf)
    noise = None
    for i in range(m):
        for j in range(i + 1, m + 1 if max_jump is None else min(m, i + max_jump) + 1):
            grid = torch.stack([candidates[i], candidates[j]])
            if solver.stochastic:
                noise = SampleNoise(range(states[i].shape[0]), dtype=states[i].dtype)
            out = sample(denoiser, states[i], grid, solver, process=process, noise=noise).x
            cost[i, j] = float((out - states[j]).pow(2).mean())
    return cost


@dataclass
class OptimisedGrid:
    sigmas: list[float]
    cost: float
    solver: str
    num_steps: int
    candidates: int
    note: str = ""

    def tensor(self) -> torch.Tensor:
        return validate_grid(self.sigmas)


def optimise_steps(
    denoiser,
    solver: Solver | str,
    num_steps: int,
    process: Process,
    dim: int,
    *,
    num_candidates: int = 48,
    calibration: int = 256,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    reference_rtol: float = 1e-6,
) -> OptimisedGrid:
    """The K = ``num_steps`` levels, among ``num_candidates`` Karras(rho = 7) candidates ending at 0, that
    minimise the summed local error of ``solver`` on a calibration batch drawn from the prior."""
    solver = make_solver(solver) if isinstance(solver, str) else solver
    if solver.adaptive:
        raise ValueError(f"{solver.name} is adaptive: it chooses its own steps")
    candidates = karras(num_candidates, process, final_zero=True)
    noise = SampleNoise(range(seed, seed + calibration), dtype=dtype)
    x_T = prior_sample(process, float(candidates[0]), noise, (dim,))
    states = [x_T]
    sample(
        denoiser,
        x_T,
        candidates,
        make_solver("dopri5", rtol=reference_rtol, atol=reference_rtol / 10),
        process=process,
        callback=lambda rec: states.append(rec.x),
    )
    cost = jump_costs(denoiser, solver, process, candidates, states)
    path, total = least_cost_path(cost, num_steps)
    sigmas = [float(candidates[k]) for k in path]
    return OptimisedGrid(sigmas, total, solver.describe(), num_steps, num_candidates + 1)


def save_grid(name: str, grid: OptimisedGrid, meta: dict | None = None, directory: str | Path | None = None) -> Path:
    """Write the grid as JSON (atomically) where ``make_grid('saved', ..., name=NAME)`` finds it."""
    path = saved_grid_path(name, directory)
    payload = {
        "name": name,
        "sigmas": grid.sigmas,
        "num_steps": grid.num_steps,
        "solver": grid.solver,
        "cost": grid.cost,
        "candidates": grid.candidates,
        **(meta or {}),
    }
    atomic_write_text(path, json.dumps(payload, indent=2) + "\n")
    return path
