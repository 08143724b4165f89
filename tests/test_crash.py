"""CRASH (Rouard & Hadjeres 2021) against exact answers: its limits are DDIM, its step written in the
paper's VP variables agrees, a single step of any size keeps a point mass's marginals, and many steps
match a Gaussian's moments."""

import math

import pytest
import torch

from samplerlab.grids import karras
from samplerlab.noise import SampleNoise
from samplerlab.processes import EDM, VPLinear
from samplerlab.sampling import generate, prior_sample, sample
from samplerlab.solvers import make_solver
from samplerlab.solvers.crash import crash_coefficients
from test_fast_solvers import _MEAN, _VAR, D64, TARGET64, _run
from test_solvers import GAUSS, fitted_order


@pytest.mark.parametrize("process", [EDM(), VPLinear()], ids=lambda p: p.name)
def test_deterministic_limit_is_ddim(process):
    assert torch.allclose(_run("crash", {"eta": 0.0}, process), _run("ddim", {}, process), atol=1e-12)


@pytest.mark.parametrize("process", [EDM(), VPLinear()], ids=lambda p: p.name)
def test_eta_one_is_the_ddpm_posterior_step(process):
    assert torch.allclose(_run("crash", {"eta": 1.0}, process), _run("ddim", {"eta": 1.0}, process), atol=1e-12)
    # in between the two families differ: DDIM's eta scales the posterior std, CRASH's the Langevin rate
    assert not torch.allclose(_run("crash", {"eta": 0.5}, process), _run("ddim", {"eta": 0.5}, process), atol=1e-3)


def test_step_in_the_papers_vp_variables():
    """The paper's sampler in x = m x_0 + sigma_tot z with an epsilon model (m^2 + sigma_tot^2 = 1):
    x' = (m'/m) x + ((m/m') sigma_tot'^2 / sigma_tot - (m'/m) sigma_tot) eps
         + sigma_tot' sqrt(1 - (sigma_tot' m / (sigma_tot m'))^2) z."""
    process = VPLinear()
    grid = karras(9, process, final_zero=False)
    seeds = range(5)
    x = prior_sample(process, float(grid[0]), SampleNoise(seeds, dtype=torch.float64), (GAUSS.dim,))
    got = sample(GAUSS, x, grid, make_solver("crash"), process=process, noise=SampleNoise(seeds, dtype=torch.float64)).x

    noise = SampleNoise(seeds, dtype=torch.float64)
    ref = x.clone()
    for sigma, sigma_next in zip(grid[:-1].tolist(), grid[1:].tolist()):
        m, m_next = float(process.scale(sigma)), float(process.scale(sigma_next))
        tot, tot_next = m * sigma, m_next * sigma_next
        eps = (ref / m - GAUSS(ref / m, torch.tensor(sigma, dtype=torch.float64))) / sigma
        ref = (m_next / m) * ref + ((m / m_next) * tot_next**2 / tot - (m_next / m) * tot) * eps
        ref = ref + tot_next * math.sqrt(1 - (tot_next * m / (tot * m_next)) ** 2) * noise.randn_like(ref)
    assert torch.allclose(got, ref, atol=1e-12)


@pytest.mark.parametrize("eta", [0.0, 0.3, 1.0, 2.0])
def test_one_step_of_any_size_keeps_a_point_mass_on_its_marginals(eta):
    keep, std = crash_coefficients(10.0, 0.5, eta)
    assert (keep * 10.0) ** 2 + std**2 == pytest.approx(0.5**2, rel=1e-12)
    # and through the loop: D = x_0 exactly, x_hat ~ N(x_0, 10^2) -> N(x_0, 0.5^2) in one step
    x0 = torch.full((1, 4), 3.0, dtype=torch.float64)
    point_mass = lambda x, sigma, **_: x0.expand_as(x)  # noqa: E731
    n = 20000
    x = 3.0 + 10.0 * SampleNoise(range(n), dtype=torch.float64).randn_like(torch.empty(n, 4, dtype=torch.float64))
    out = sample(point_mass, x, torch.tensor([10.0, 0.5], dtype=torch.float64), make_solver("crash", eta=eta),
                 process=EDM(), noise=SampleNoise(range(n, 2 * n), dtype=torch.float64)).x
    assert abs(float(out.std()) - 0.5) < 4 * 0.5 / math.sqrt(2 * 4 * n)
    assert abs(float(out.mean()) - 3.0) < 4 * 0.5 / math.sqrt(4 * n)


def test_matches_mean_and_variances_of_a_64d_gaussian():
    n = 2000
    x = generate(TARGET64, (D64,), karras(200, EDM()), make_solver("crash", eta=0.5), range(n), process=EDM(),
                 dtype=torch.float64).x
    assert bool(((x.mean(0) - _MEAN).abs() < 5 * torch.sqrt(_VAR / n)).all())
    ratio = x.var(0) / _VAR
    assert abs(float(ratio.mean()) - 1) < 0.05, float(ratio.mean())
    assert 0.8 < float(ratio.min()) and float(ratio.max()) < 1.25


def test_deterministic_crash_is_first_order():
    order, errors = fitted_order(make_solver("crash", eta=0.0), EDM(), karras)
    assert abs(order - 1) < 0.3, errors


def test_bad_eta_is_rejected_with_its_value():
    with pytest.raises(ValueError, match="eta must be a finite number >= 0, got -1"):
        make_solver("crash", eta=-1.0)
