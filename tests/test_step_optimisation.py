import itertools

import numpy as np
import pytest
import torch

from samplerlab.calibration import Target
from samplerlab.calibration.dp import dp_grid, least_cost_path
from samplerlab.grids import GridError, GridFile, karras, make_grid
from samplerlab.metrics import reference_ode_solution, rms_distance
from samplerlab.noise import SampleNoise
from samplerlab.problems import make_problem
from samplerlab.processes import EDM
from samplerlab.sampling import prior_sample, sample
from samplerlab.solvers import make_solver


def _brute_force(cost, k):
    m = cost.shape[0] - 1
    best = (np.inf, None)
    for inner in itertools.combinations(range(1, m), k - 1):
        path = (0, *inner, m)
        total = sum(cost[a, b] for a, b in zip(path, path[1:]))
        best = min(best, (total, path))
    return best


@pytest.mark.parametrize("seed", range(6))
def test_dp_finds_the_minimum_cost_path(seed):
    rng = np.random.default_rng(seed)
    m = 9
    cost = rng.exponential(size=(m + 1, m + 1))
    for k in range(1, m + 1):
        path, total = least_cost_path(cost, k)
        want, want_path = _brute_force(cost, k)
        assert total == pytest.approx(want) and len(path) == k + 1
        assert path[0] == 0 and path[-1] == m and all(a < b for a, b in zip(path, path[1:]))
        assert sum(cost[a, b] for a, b in zip(path, path[1:])) == pytest.approx(total)


def test_dp_rejects_impossible_requests():
    with pytest.raises(ValueError, match="num_edges"):
        least_cost_path(np.ones((4, 4)), 4)
    with pytest.raises(ValueError, match="square"):
        least_cost_path(np.ones((3, 4)), 1)


def test_optimised_grid_beats_karras_for_heun_at_nfe_10(tmp_path):
    model = make_problem("ring").model
    solver = make_solver("heun")
    steps = solver.steps_for_nfe(10)
    grid = dp_grid(Target(model, EDM(), (2,)), solver, steps, range(64), candidates=32)
    grid.sigmas = grid.grid.tolist()
    assert len(grid.sigmas) == steps + 1 and grid.sigmas[-1] == 0.0
    # evaluated on fresh seeds, not the calibration batch
    x = prior_sample(EDM(), 80.0, SampleNoise(range(500, 756), dtype=torch.float64), (2,))
    ref = reference_ode_solution(model, x, 80.0, 0.0)
    err_opt = rms_distance(sample(model, x, grid.grid, solver).x, ref)
    err_karras = rms_distance(sample(model, x, karras(steps, EDM()), solver).x, ref)
    assert err_opt < 0.5 * err_karras
    # saved, then found by name through the grid registry
    path = GridFile(tuple(grid.sigmas), None, {"problem": "ring"}).write(tmp_path / "ring-heun.json")
    assert GridFile.read(path).provenance["problem"] == "ring"
    again = make_grid("saved", steps, EDM(), name="ring-heun", directory=tmp_path)
    assert again.tolist() == grid.sigmas
    with pytest.raises(GridError, match="has 5 steps, not 7"):
        make_grid("saved", 7, EDM(), name="ring-heun", directory=tmp_path)
    with pytest.raises(GridError, match="no saved grid"):
        make_grid("saved", 5, EDM(), name="nothing", directory=tmp_path)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(GridError, match="malformed"):
        make_grid("saved", 5, EDM(), name="bad", directory=tmp_path)
    with pytest.raises(ValueError, match="bad grid name"):
        make_grid("saved", 5, EDM(), name="../x", directory=tmp_path)
