"""The conditional OUVE case end to end: sampling the residual u = x - y with the exact posterior
denoiser recovers p(x_0 | y) when started from the true marginal at T."""

import pytest
import torch

from samplerlab.analytic import GaussianMixture, JointGaussianMixture
from samplerlab.grids import uniform_time
from samplerlab.noise import SampleNoise
from samplerlab.processes import OUVE
from samplerlab.sampling import sample
from samplerlab.solvers import make_solver

CLEAN = GaussianMixture(torch.tensor([0.4, 0.6], dtype=torch.float64),
                        torch.tensor([[-0.3, 0.2], [0.4, -0.1]], dtype=torch.float64),
                        torch.tensor([[0.02, 0.05], [0.04, 0.01]], dtype=torch.float64))
JOINT = JointGaussianMixture.clean_plus_noise(CLEAN, torch.tensor([0.05, 0.05], dtype=torch.float64))


@pytest.mark.parametrize("solver, params", [("heun", {}), ("euler-maruyama", {})])
def test_residual_sampling_recovers_the_posterior(solver, params):
    n = 4000
    process = OUVE()
    y = torch.tensor([[0.1, 0.05]], dtype=torch.float64).expand(n, 2).contiguous()
    posterior = JOINT.posterior(y)
    residual = JOINT.residual_posterior(y)  # the exact denoiser of u_0 = x_0 - y given y
    # the true marginal of u at T: s(T) (u_0 + sigma(T) z), u_0 ~ p(u_0 | y)
    g = torch.Generator().manual_seed(0)
    u0 = residual.sample(n, g)
    grid = uniform_time(300, process, final_zero=False)
    sig_T = float(grid[0])
    u_T = float(process.scale(sig_T)) * (u0 + sig_T * torch.randn(n, 2, generator=g, dtype=torch.float64))
    noise = SampleNoise(range(n), dtype=torch.float64)
    u = sample(residual, u_T, grid, make_solver(solver, **params), process=process, noise=noise).x
    x = u / float(process.scale(float(grid[-1]))) + y  # back to data: undo s(t_min), add y
    exact = posterior.sample(n, torch.Generator().manual_seed(1))
    se = exact.std(0) / n**0.5
    assert bool((torch.abs(x.mean(0) - exact.mean(0)) < 5 * se * 2**0.5 + 0.01).all())
    assert torch.allclose(x.std(0), exact.std(0), rtol=0.06)
