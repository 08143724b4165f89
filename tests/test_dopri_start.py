"""Dormand-Prince chooses its first step from the problem (Hairer, Norsett & Wanner I, II.4) instead of a
fixed 0.1 in log sigma, and may grow steps by up to 10x: fewer model calls at the same tolerance, with
errors that still shrink as the tolerance tightens."""

import torch

from samplerlab.grids import karras
from samplerlab.metrics import reference_ode_solution
from samplerlab.noise import SampleNoise
from samplerlab.problems import make_problem
from samplerlab.processes import EDM
from samplerlab.sampling import sample
from samplerlab.solvers import make_solver


def _run(model, x, **params):
    return sample(model, x, karras(2, EDM()), make_solver("dopri5", **params), process=EDM())


def test_automatic_first_step_costs_fewer_calls_than_the_fixed_one():
    model = make_problem("gmm64").model
    x = SampleNoise(range(64), dtype=torch.float64).randn(model.dim) * 80.0
    exact = reference_ode_solution(model, x, 80.0, 0.0)
    auto = _run(model, x, rtol=0.1, atol=0.01)
    fixed = _run(model, x, rtol=0.1, atol=0.01, h_init=0.1, factor_max=5.0)  # 0.1.0's start and growth limit
    assert auto.nfe < fixed.nfe
    errors = []
    for rtol in (0.1, 1e-2, 1e-3, 1e-4):
        r = _run(model, x, rtol=rtol, atol=rtol / 10)
        errors.append(float((r.x - exact).pow(2).mean(1).sqrt().mean()))
    assert errors == sorted(errors, reverse=True) and errors[-1] < 1e-3, errors


def test_first_step_formula_on_exponential_decay():
    """For x' = x (the probability-flow ODE in log sigma far above the data scale, where D ~ 0), HNW's
    estimate is min(100 h0, (0.01 / max(d1, d2))^(1/5)) with d1 = d2 = ||x|| in the scaled norm."""
    solver = make_solver("dopri5", rtol=0.1, atol=1e-12)
    x = torch.full((3, 4), 5.0, dtype=torch.float64)

    def f(xs, us):
        return xs, torch.zeros_like(xs)

    h = solver._initial_step(f, x, x.clone(), torch.zeros(3, dtype=torch.float64), (3, 1))
    d = 1 / 0.1  # ||x|| / (rtol |x|)
    expected = min(100 * 0.01, (0.01 / d) ** (1 / 5))
    assert torch.allclose(h, torch.full((3,), expected, dtype=torch.float64), rtol=1e-6)
