"""Dormand-Prince chooses its first step from the problem (Hairer, Norsett & Wanner I, II.4) instead of a
fixed 0.1 in log sigma, with DOPRI5's step control: fewer model calls at the same tolerance, with errors
that still shrink as the tolerance tightens. In the exponential integrators' variable (z = x / sigma in
v = 1 / sigma, the default) it is more accurate than in log sigma at no more calls."""

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
    auto = _run(model, x, rtol=0.1, atol=0.01, variable="log-sigma")
    # 0.1.0's start and growth limit
    fixed = _run(model, x, rtol=0.1, atol=0.01, h_init=0.1, factor_max=5.0, variable="log-sigma")
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

    h = solver._initial_step(f, x, x.clone(), torch.zeros(3, dtype=torch.float64), (3, 1), lambda z, v: z, False)
    d = 1 / 0.1  # ||x|| / (rtol |x|)
    expected = min(100 * 0.01, (0.01 / d) ** (1 / 5))
    assert torch.allclose(h, torch.full((3,), expected, dtype=torch.float64), rtol=1e-6)


def test_the_inverse_sigma_variable_is_more_accurate_for_no_more_calls():
    """Loose tolerances, where few calls are the point: at rtol 0.1 the inv-sigma variable costs fewer calls
    than log sigma at 0.01 and errs less (gmm64: 57 NFE, error 5e-3, against 75 NFE and 1e-2). At tight
    tolerances log sigma is as good (at 1e-3, 81 NFE for 3e-4 against inv-sigma's 63 NFE for 1.2e-3)."""
    model = make_problem("gmm64").model
    x = SampleNoise(range(64), dtype=torch.float64).randn(model.dim) * 80.0
    exact = reference_ode_solution(model, x, 80.0, 0.0)
    for rtol in (0.1,):
        inv = _run(model, x, rtol=rtol, atol=rtol / 10, variable="inv-sigma")
        log = _run(model, x, rtol=rtol / 10, atol=rtol / 100, variable="log-sigma")
        err_inv, err_log = (float((r.x - exact).pow(2).mean(1).sqrt().mean()) for r in (inv, log))
        assert inv.nfe <= log.nfe and err_inv < err_log, (inv.nfe, log.nfe, err_inv, err_log)


def test_unknown_variable_names_the_choices():
    import pytest

    with pytest.raises(ValueError, match="log-sigma, inv-sigma"):
        make_solver("dopri5", variable="sigma")


def test_the_step_to_zero_reuses_the_last_stage():
    """FSAL: the last stage of the last step evaluated D at the state and level the step to 0 starts from;
    that step costs no model call and returns exactly that D."""
    model = make_problem("gmm64").model
    x = SampleNoise(range(16), dtype=torch.float64).randn(model.dim) * 80.0
    solver = make_solver("dopri5", rtol=0.1, atol=0.01)
    to_zero = sample(model, x, karras(2, EDM()), solver, process=EDM())
    to_min = sample(model, x, karras(2, EDM())[:-1], solver, process=EDM())
    assert to_zero.nfe == to_min.nfe
    assert torch.allclose(to_zero.x, model(to_min.x, torch.tensor(0.002, dtype=torch.float64)), rtol=0, atol=1e-12)
