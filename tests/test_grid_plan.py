"""Multistep weights are computed once per (solver, process, grid) and reused: the same samples as a fresh
computation, another plan for another grid, process or solver setting."""

import torch

from samplerlab.grids import karras
from samplerlab.noise import SampleNoise
from samplerlab.problems import make_problem
from samplerlab.processes import EDM, VPLinear
from samplerlab.sampling import sample
from samplerlab.solvers import base, solver_from_spec


def _state(spec, process, grid):
    solver = solver_from_spec(spec)
    ctx = base.StepContext(None, process, grid, None, {}, solver.name)
    state = solver.init_state(ctx)
    return state.history.plan if hasattr(state, "history") else state.plan


def test_a_plan_is_reused_for_the_same_grid_and_only_then():
    grid = karras(8, EDM())
    for spec in ("lms", "deis-tab", "dpm-solver++:order=3", "dpm-solver:multistep=true", "unipc:order=3"):
        first = _state(spec, EDM(), grid)
        assert _state(spec, EDM(), grid.clone()) is first
        assert _state(spec, EDM(), karras(9, EDM())) is not first
        assert _state(spec, EDM(t_max=60.0), grid) is not first
    assert _state("lms", VPLinear(), karras(8, VPLinear())) is not _state("lms", EDM(), grid)
    assert _state("unipc:variant=bh1", EDM(), grid) is not _state("unipc", EDM(), grid)


def test_cached_plans_give_the_samples_of_fresh_ones():
    model = make_problem("gmm64").model.to(torch.float64)
    x = SampleNoise(range(16), dtype=torch.float64).randn(model.dim) * 80.0
    grid = karras(10, EDM())
    for spec in ("lms", "dpm-solver++:order=3", "unipc"):
        base._PLANS.clear()
        fresh = sample(model, x, grid, solver_from_spec(spec)).x
        cached = sample(model, x, grid, solver_from_spec(spec)).x
        assert torch.equal(fresh, cached)
    assert len(base._PLANS) <= base.PLANS_KEPT
