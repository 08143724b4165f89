
import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from samplerlab.analytic import GaussianMixture, JointGaussianMixture
from samplerlab.metrics import reference_ode_solution
from samplerlab.problems import PROBLEMS, make_problem


def _mixture(full: bool, d=3, K=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.rand(K, generator=g, dtype=torch.float64) + 0.2
    mu = torch.randn(K, d, generator=g, dtype=torch.float64)
    if full:
        a = torch.randn(K, d, d, generator=g, dtype=torch.float64)
        covs = a @ a.transpose(-1, -2) * 0.2 + 0.05 * torch.eye(d, dtype=torch.float64)
    else:
        covs = torch.rand(K, d, generator=g, dtype=torch.float64) * 0.5 + 0.02
    return GaussianMixture(w, mu, covs)


@pytest.mark.parametrize("full", [False, True])
@pytest.mark.parametrize("sigma", [0.05, 0.7, 5.0])
def test_denoiser_satisfies_tweedie(full, sigma):
    """D(x, sigma) = x + sigma^2 grad log p(x; sigma), with the gradient taken by autograd of log_prob."""
    gmm = _mixture(full)
    x = torch.randn(16, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 2
    x.requires_grad_(True)
    grad, = torch.autograd.grad(gmm.log_prob(x, sigma).sum(), x)
    expected = x.detach() + sigma**2 * grad
    assert torch.allclose(gmm.denoise(x.detach(), sigma), expected, atol=1e-10)
    assert torch.allclose(gmm.score(x.detach(), sigma), grad, atol=1e-9)


@pytest.mark.parametrize("full", [False, True])
def test_log_prob_matches_scipy(full):
    gmm = _mixture(full)
    x = torch.randn(10, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    sigma = 0.3
    covs = gmm.covariances()
    w = torch.exp(gmm.log_weights)
    dens = sum(float(w[k]) * multivariate_normal(gmm.means[k].numpy(), covs[k].numpy() + sigma**2 * np.eye(3)).pdf(x.numpy())
               for k in range(3))
    assert np.allclose(gmm.log_prob(x, sigma).numpy(), np.log(dens), rtol=1e-10)


def test_per_sample_sigma_matches_scalar():
    gmm = _mixture(True)
    x = torch.randn(4, 3, dtype=torch.float64)
    sig = torch.tensor([0.1, 0.5, 1.0, 3.0], dtype=torch.float64)
    batched = gmm.denoise(x, sig)
    for i in range(4):
        assert torch.allclose(batched[i], gmm.denoise(x[i : i + 1], float(sig[i]))[0])


@pytest.mark.parametrize("full", [False, True])
def test_exact_sampling_moments(full):
    gmm = _mixture(full)
    xs = gmm.sample(200_000, torch.Generator().manual_seed(3))
    assert torch.allclose(xs.mean(0), gmm.mean(), atol=0.02)
    assert torch.allclose(torch.cov(xs.T), gmm.covariance(), atol=0.03)


def test_float32_model_agrees_with_float64():
    gmm = _mixture(True)
    x = torch.randn(8, 3, dtype=torch.float64)
    d32 = gmm.to(torch.float32).denoise(x.float(), 0.4)
    assert d32.dtype == torch.float32
    assert torch.allclose(d32.double(), gmm.denoise(x, 0.4), atol=1e-5)


def test_closed_form_flow_matches_numerical_ode():
    g = make_problem("gauss16").model
    x = torch.randn(5, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(4)) * 10
    exact = g.ode_flow(x, 10.0, 0.0)
    numeric = reference_ode_solution(g, x, 10.0, 0.0, rtol=1e-11, atol=1e-12)
    assert torch.allclose(numeric, exact, atol=1e-7)
    back = g.ode_flow(exact, 0.0, 10.0)
    assert torch.allclose(back, x, atol=1e-9)


def test_joint_posterior_matches_quadrature():
    """p(x0 | y) of a 1-D joint mixture against brute-force Bayes on a fine grid."""
    clean = GaussianMixture(torch.tensor([0.3, 0.7]), torch.tensor([[-1.0], [1.5]], dtype=torch.float64),
                            torch.tensor([[0.2], [0.05]], dtype=torch.float64))
    joint = JointGaussianMixture.clean_plus_noise(clean, torch.tensor([0.3], dtype=torch.float64))
    y = torch.tensor([[0.4], [1.2], [-2.0]], dtype=torch.float64)
    post = joint.posterior(y)
    grid = torch.linspace(-6, 6, 24001, dtype=torch.float64)[:, None]
    for i in range(3):
        pts = torch.cat([grid, y[i].expand(len(grid), 1)], dim=1)
        logp = GaussianMixture(joint.weights, joint.means, joint.covs).log_prob(pts)
        w = torch.softmax(logp, 0)
        mean_q = float((w * grid[:, 0]).sum())
        assert float(post.mean()[i, 0]) == pytest.approx(mean_q, abs=1e-6)
    res = joint.residual_posterior(y)
    assert torch.allclose(res.mean(), post.mean() - y)


def test_joint_posterior_density_matches_bayes():
    clean = GaussianMixture(torch.tensor([0.5, 0.5]), torch.tensor([[-1.0, 0.0], [1.0, 0.5]], dtype=torch.float64),
                            torch.tensor([[0.2, 0.1], [0.1, 0.3]], dtype=torch.float64))
    joint = JointGaussianMixture.clean_plus_noise(clean, torch.tensor([0.2, 0.4], dtype=torch.float64))
    y = torch.tensor([[0.3, -0.2]], dtype=torch.float64)
    post = joint.posterior(y)
    x = torch.randn(50, 2, dtype=torch.float64)
    full = GaussianMixture(joint.weights, joint.means, joint.covs)
    logjoint = full.log_prob(torch.cat([x, y.expand(50, 2)], 1))
    marg_y = GaussianMixture(joint.weights, joint.means[:, 2:], joint.covs[:, 2:, 2:]).log_prob(y)
    per_sample = GaussianMixture(torch.exp(post.log_weights).expand(50, -1), post.means.expand(50, -1, -1),
                                 post.covariances())
    assert torch.allclose(per_sample.log_prob(x), logjoint - marg_y, atol=1e-10)


def test_bundled_problems_are_deterministic():
    for name in PROBLEMS.names():
        a, b = make_problem(name).model, make_problem(name).model
        assert torch.equal(a.means, b.means) and torch.equal(a.evals, b.evals)


def test_invalid_mixture_inputs():
    with pytest.raises(ValueError, match="positive definite"):
        GaussianMixture(torch.ones(1), torch.zeros(1, 2), -torch.eye(2)[None])
    with pytest.raises(ValueError, match="covs must have shape"):
        GaussianMixture(torch.ones(1), torch.zeros(1, 2), torch.ones(1, 3))
