"""Solvers against exact answers: convergence orders on a Gaussian whose probability-flow ODE is
closed form, moment matching for stochastic solvers, exact equivalences, and a contract suite."""


import numpy as np
import pytest
import torch

from samplerlab.analytic import GaussianMixture
from samplerlab.grids import karras, uniform_time
from samplerlab.noise import SampleNoise
from samplerlab.problems import make_problem
from samplerlab.processes import EDM, OUVE, VE, SubVP, VPCosine, VPLinear
from samplerlab.sampling import generate, prior_sample, sample
from samplerlab.solvers import SOLVERS, make_solver

GAUSS = make_problem("gauss16").model  # eigenvalues in [1e-3, 1]: a stiff-ish exact problem


def ode_error(solver, process, grid_fn, steps, n=32):
    """RMS distance to the exact ODE solution, in process coordinates, from the same starting noise."""
    grid = grid_fn(steps, process, final_zero=False)
    noise = SampleNoise(range(n), dtype=torch.float64)
    x = prior_sample(process, float(grid[0]), noise, (GAUSS.dim,))
    result = sample(GAUSS, x, grid, solver, process=process)
    s0, s1 = float(process.scale(float(grid[0]))), float(process.scale(float(grid[-1])))
    exact = GAUSS.ode_flow(x / s0, float(grid[0]), float(grid[-1])) * s1
    return float((result.x - exact).pow(2).mean().sqrt())


def fitted_order(solver, process, grid_fn, steps=(32, 64, 128, 256)):
    errors = [ode_error(solver, process, grid_fn, n) for n in steps]
    slope = np.polyfit(np.log(steps), np.log(errors), 1)[0]
    return -slope, errors


CASES = [
    ("euler", EDM(), karras), ("heun", EDM(), karras), ("ddim", EDM(), karras),
    ("euler", VPLinear(), uniform_time), ("heun", VPLinear(), uniform_time), ("ddim", VPLinear(), uniform_time),
    ("euler", VPCosine(), karras), ("heun", VPCosine(), karras),
    ("euler", SubVP(), uniform_time), ("heun", SubVP(), uniform_time),
    ("euler", OUVE(), uniform_time), ("heun", OUVE(), uniform_time),
    ("euler", VE(), karras), ("heun", VE(), karras),
]


@pytest.mark.parametrize("name, process, grid_fn", CASES, ids=lambda v: getattr(v, "name", getattr(v, "__name__", v)))
def test_empirical_convergence_order(name, process, grid_fn):
    solver = make_solver(name)
    order, errors = fitted_order(solver, process, grid_fn)
    assert abs(order - solver.order) < 0.3, f"{name} on {process.name}: fitted order {order:.2f}, errors {errors}"
    assert errors[-1] < errors[0]


def test_euler_is_ddim_under_edm_but_not_under_vp():
    """Karras et al. 2022, Sec. 3: DDIM is Euler with sigma(t) = t, s = 1."""
    for process, same in ((EDM(), True), (VPLinear(), False)):
        grid = karras(12, process)
        seeds = range(8)
        a = generate(GAUSS, (16,), grid, make_solver("euler"), seeds, process=process, dtype=torch.float64).x
        b = generate(GAUSS, (16,), grid, make_solver("ddim"), seeds, process=process, dtype=torch.float64).x
        assert torch.allclose(a, b, atol=1e-12) == same


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_euler_ancestral_is_ddim_with_same_eta_under_edm(eta):
    grid = karras(15, EDM())
    seeds = range(6)
    a = generate(GAUSS, (16,), grid, make_solver("euler-ancestral", eta=eta), seeds, dtype=torch.float64).x
    b = generate(GAUSS, (16,), grid, make_solver("ddim", eta=eta), seeds, dtype=torch.float64).x
    assert torch.allclose(a, b, atol=1e-10)


# -- stochastic solvers reproduce the target distribution ---------------------------------

TARGET = GaussianMixture.gaussian(torch.tensor([0.5, -0.3], dtype=torch.float64),
                                  torch.tensor([[0.30, 0.10], [0.10, 0.20]], dtype=torch.float64))

STOCHASTIC = [
    ("euler-maruyama", {}, EDM(), karras),
    ("euler-maruyama", {}, VPLinear(), uniform_time),
    ("ddim", {"eta": 1.0}, EDM(), karras),
    ("euler-ancestral", {"eta": 1.0}, VPLinear(), karras),
    ("edm-stochastic", {"s_churn": 80.0, "s_tmin": 0.0, "s_tmax": float("inf"), "s_noise": 1.0}, EDM(), karras),
]


@pytest.mark.parametrize("name, params, process, grid_fn", STOCHASTIC, ids=lambda v: getattr(v, "name", str(v)))
def test_stochastic_solver_matches_mean_and_covariance(name, params, process, grid_fn):
    n, steps = 4000, 400
    grid = grid_fn(steps, process)
    x = generate(TARGET, (2,), grid, make_solver(name, **params), range(n), process=process, dtype=torch.float64).x
    mean, cov = TARGET.mean(), TARGET.covariance()
    se_mean = torch.sqrt(torch.diagonal(cov) / n)
    assert bool((torch.abs(x.mean(0) - mean) < 4 * se_mean).all()), (x.mean(0), mean)
    # std error of a sample covariance entry: sqrt((C_ii C_jj + C_ij^2) / n)
    se_cov = torch.sqrt((torch.diagonal(cov)[:, None] * torch.diagonal(cov)[None, :] + cov**2) / n)
    assert bool((torch.abs(torch.cov(x.T) - cov) < 4 * se_cov + 0.01 * cov.abs()).all()), (torch.cov(x.T), cov)


def test_stochastic_solver_needs_noise():
    x = torch.zeros(2, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="stochastic"):
        sample(TARGET, x, karras(3, EDM()), make_solver("euler-maruyama"))


# -- contract suite: every registered solver --------------------------------------------

ALL_SOLVERS = SOLVERS.names()
# parameters that keep a solver meaningful on the contract's tiny grids (1-5 steps from sigma = 80)
CONTRACT_PARAMS = {"annealed-langevin": {"steps_per_level": 3, "step_size": 1e-8}, "ddim": {"eta": 1.0}}


def _contract_solver(name):
    return make_solver(name, **CONTRACT_PARAMS.get(name, {}))


def _contract_grids(solver):
    if solver.adaptive:  # one adaptive interval, then the final denoising step (or not)
        return [(karras(2, EDM()), 2, True), (karras(1, EDM(), final_zero=False), 1, False)]
    return [(karras(n, EDM(), final_zero=fz), n, fz) for n in (1, 2, 5) for fz in (True, False)]


@pytest.mark.parametrize("name", ALL_SOLVERS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_contract_shapes_dtypes_nfe(name, dtype):
    solver = _contract_solver(name)
    model = make_problem("ring").model.to(dtype)
    for grid, steps, final_zero in _contract_grids(solver):
        r = generate(model, (2,), grid, solver, range(3), dtype=dtype)
        assert r.x.shape == (3, 2) and r.x.dtype == dtype
        assert bool(torch.isfinite(r.x).all()), f"{name}: non-finite samples on grid {grid.tolist()}"
        assert r.num_steps == steps
        if solver.adaptive:
            assert r.nfe > 0 and r.info["accepted_steps_mean"] > 0
        else:
            assert r.nfe == solver.nfe(steps, final_zero), f"{name}: counted {r.nfe}"


@pytest.mark.parametrize("name", ALL_SOLVERS)
def test_contract_seed_fixes_sample_regardless_of_batch(name):
    solver = _contract_solver(name)
    model = make_problem("ring").model
    grid = karras(2 if solver.adaptive else 6, EDM())
    batch = generate(model, (2,), grid, solver, [11, 3, 7, 5], dtype=torch.float64).x
    again = generate(model, (2,), grid, solver, [11, 3, 7, 5], dtype=torch.float64).x
    alone = generate(model, (2,), grid, solver, [7], dtype=torch.float64).x
    assert torch.equal(batch, again)
    assert torch.allclose(batch[2:3], alone, atol=1e-12)
    other = generate(model, (2,), grid, solver, [8], dtype=torch.float64).x
    assert not torch.allclose(other, alone)


@pytest.mark.parametrize("name", ALL_SOLVERS)
def test_contract_declares_its_nature(name):
    solver = _contract_solver(name)
    assert solver.convergence_order >= 1 and solver.calls_per_step >= 1
    assert isinstance(solver.stochastic, bool) and isinstance(solver.adaptive, bool)
    if solver.adaptive:
        assert solver.steps_for_nfe(50) is None
        with pytest.raises(ValueError, match="adaptive"):
            solver.nfe(10)
        return
    assert solver.steps_for_nfe(0) is None
    for budget in (solver.nfe(1), 5, 10, 50):
        steps = solver.steps_for_nfe(budget)
        assert steps is not None and solver.nfe(steps) <= budget < solver.nfe(steps + 1)


def test_heun_costs_two_calls_per_step_less_the_last():
    assert make_solver("heun").nfe(10) == 19 and make_solver("heun").nfe(10, final_zero=False) == 20
    assert make_solver("heun").steps_for_nfe(10) == 5


def test_unknown_solver_and_bad_parameters():
    with pytest.raises(ValueError, match="unknown solver .dpm.; valid names: .*heun"):
        make_solver("dpm")
    with pytest.raises(ValueError, match="valid parameters: eta"):
        make_solver("ddim", etta=1)
