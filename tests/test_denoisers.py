import pytest
import torch

from samplerlab.analytic import GaussianMixture
from samplerlab.denoisers import (
    ClassifierFreeGuidance,
    DiscreteDDPMAdapter,
    EDMPrecond,
    NFECounter,
    Prediction,
    PredictionAdapter,
    prediction_from_x0,
)
from samplerlab.processes import EDM, OUVE, VE, RectifiedFlow, SubVP, VPCosine, VPLinear

PROCESSES = [EDM(), VE(), VPLinear(), VPCosine(), SubVP(), OUVE(), RectifiedFlow()]


def _truth(prediction, x0, eps, t, p):
    """The network target written from each parameterisation's definition."""
    alpha, sigma_t = p.s(t), p.s(t) * p.sigma(t)
    if prediction is Prediction.EPSILON:
        return eps
    if prediction is Prediction.V:  # Salimans & Ho 2022
        return alpha * eps - sigma_t * x0
    if prediction is Prediction.SCORE:  # grad log N(x_t; alpha x0, sigma_t^2)
        return -eps / sigma_t
    if prediction is Prediction.X0:
        return x0
    if prediction is Prediction.FLOW:  # d/dt (alpha x0 + sigma_t eps)
        dsigma_t = p.ds_dt(t) * p.sigma(t) + p.s(t) * p.dsigma_dt(t)
        return p.ds_dt(t) * x0 + dsigma_t * eps


@pytest.mark.parametrize("prediction", list(Prediction))
@pytest.mark.parametrize("p", PROCESSES, ids=lambda p: p.name)
def test_adapter_recovers_x0_from_exact_targets(prediction, p):
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(6, 3, generator=g, dtype=torch.float64)
    eps = torch.randn(6, 3, generator=g, dtype=torch.float64)
    sigma = torch.tensor([p.sigma_min * 1.5, 0.3, 1.0, 2.0, p.sigma_max * 0.5, p.sigma_max * 0.9], dtype=torch.float64)
    sigma = sigma.clamp(p.sigma_min * 1.01, p.sigma_max * 0.99)
    t = p.t_of_sigma(sigma)[:, None]
    x_t = p.s(t) * (x0 + sigma[:, None] * eps)

    def net(x_in, t_in):
        assert torch.allclose(x_in, x_t) and torch.allclose(t_in, t[:, 0])
        return _truth(prediction, x0, eps, t, p)

    D = PredictionAdapter(net, p, prediction)
    assert torch.allclose(D(x_t / p.s(t), sigma), x0, atol=1e-8, rtol=1e-8)


@pytest.mark.parametrize("prediction", list(Prediction))
@pytest.mark.parametrize("p", [VPLinear(), RectifiedFlow()], ids=lambda p: p.name)
def test_parameterisation_round_trip(prediction, p):
    gmm = GaussianMixture(torch.ones(2), torch.tensor([[1.0, 0.0], [-1.0, 0.5]], dtype=torch.float64),
                          torch.tensor([[0.1, 0.2], [0.3, 0.05]], dtype=torch.float64))

    def net(x_t, t):
        sigma = p.sigma(t)[:, None]
        x_hat = x_t / p.s(t)[:, None]
        return prediction_from_x0(gmm(x_hat, sigma[:, 0]), x_t, sigma, p, prediction)

    D = PredictionAdapter(net, p, prediction)
    x = torch.randn(5, 2, dtype=torch.float64) * 2
    for sigma in (0.05, 1.0, 20.0):
        assert torch.allclose(D(x, sigma), gmm(x, sigma), atol=1e-9)


def test_flow_velocity_is_eps_minus_x0_under_rectified_flow_in_float32_at_its_start():
    """Under rectified flow the velocity is v = eps - x_0 (Liu et al. 2022) and x_0 = x_t - t v; at t_max =
    1 - 1e-4 the adapter must keep float32 precision (its coefficients are formed in float64: in float32,
    sigma_t' = -sigma + s sigma' is 1 computed from two numbers near 1e4)."""
    p = RectifiedFlow()
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g)
    for t in (0.3, 0.99, p.t_max):
        x_t = (1 - t) * x0 + t * eps
        seen = {}

        def net(x_in, timestep):
            seen["x"], seen["t"] = x_in, timestep
            return eps - x0

        D = PredictionAdapter(net, p, "flow", time_scale=1000)
        sigma = torch.tensor(t / (1 - t), dtype=torch.float32)
        out = D(x_t / float(p.scale(float(sigma))), sigma)
        assert torch.allclose(out, x0, atol=2e-4, rtol=0), (t, (out - x0).abs().max())
        assert torch.allclose(seen["x"], x_t, rtol=1e-5, atol=1e-5)
        assert torch.allclose(seen["t"], torch.full((4,), 1000 * t), rtol=1e-6)
        # and the other way: the adapter's own inverse gives back the velocity eps - x_0
        v = prediction_from_x0(x0.double(), x_t.double(), torch.tensor(t / (1 - t), dtype=torch.float64), p,
                               Prediction.FLOW)
        assert torch.allclose(v, (eps - x0).double(), atol=1e-6)


def _linear_alphas_cumprod(K=1000):
    betas = torch.linspace(1e-4, 0.02, K, dtype=torch.float64)
    return torch.cumprod(1 - betas, 0)


@pytest.mark.parametrize("prediction", [Prediction.EPSILON, Prediction.V, Prediction.X0])
def test_discrete_ddpm_adapter_at_its_timesteps(prediction):
    abar = _linear_alphas_cumprod()
    gmm = GaussianMixture.gaussian(torch.tensor([0.5, -0.2], dtype=torch.float64),
                                   torch.tensor([0.2, 0.05], dtype=torch.float64))

    def net(x_t, k):
        assert torch.allclose(k, k.round(), atol=1e-6), "timesteps of the table must map to integers"
        ab = abar[k.round().long()][:, None]
        sigma = torch.sqrt((1 - ab) / ab)
        x_hat = x_t / torch.sqrt(ab)
        x0 = gmm(x_hat, sigma[:, 0])
        eps = (x_hat - x0) / sigma
        return {Prediction.EPSILON: eps, Prediction.V: torch.sqrt(ab) * eps - torch.sqrt(1 - ab) * x0,
                Prediction.X0: x0}[prediction]

    D = DiscreteDDPMAdapter(net, abar, prediction)
    for k in (0, 10, 500, 999):
        sigma = float(D.sigmas[k])
        x = torch.randn(3, 2, dtype=torch.float64) * (1 + sigma)
        assert torch.allclose(D(x, sigma), gmm(x, sigma), atol=1e-9)


def test_discrete_timestep_interpolates_log_sigma():
    D = DiscreteDDPMAdapter(lambda x, k: x, _linear_alphas_cumprod())
    s = D.sigmas
    mid = torch.sqrt(s[100] * s[101])  # geometric midpoint: halfway in log sigma
    assert float(D.timestep(mid[None])) == pytest.approx(100.5)
    assert float(D.timestep(torch.tensor([1e9], dtype=torch.float64))) == pytest.approx(999)
    with pytest.raises(ValueError, match="strictly decreasing"):
        DiscreteDDPMAdapter(lambda x, k: x, torch.tensor([0.5, 0.9]))


def test_edm_precond_with_zero_network_is_exact_for_sigma_data_gaussian():
    """For data N(0, sigma_data^2 I), D = c_skip x exactly, so F = 0 is the ideal network (Karras et al. 2022, B.6)."""
    sd = 0.5
    D = EDMPrecond(lambda x, c_noise: torch.zeros_like(x), sigma_data=sd)
    exact = GaussianMixture.gaussian(torch.zeros(4, dtype=torch.float64), torch.full((4,), sd**2, dtype=torch.float64))
    x = torch.randn(7, 4, dtype=torch.float64)
    for sigma in (0.002, 0.5, 80.0):
        assert torch.allclose(D(x, sigma), exact(x, sigma), atol=1e-12)
    c_skip, c_out, c_in, c_noise = D.coefficients(torch.tensor(1.0, dtype=torch.float64))
    assert float(c_skip) == pytest.approx(0.25 / 1.25)
    assert float(c_out) == pytest.approx(0.5 / 1.25**0.5)
    assert float(c_in) == pytest.approx(1 / 1.25**0.5)
    assert float(c_noise) == 0.0


def test_classifier_free_guidance_combines_and_counts_calls():
    cond_model = GaussianMixture.gaussian(torch.tensor([1.0, 1.0], dtype=torch.float64), torch.tensor([0.1, 0.1], dtype=torch.float64))
    uncond_model = GaussianMixture.gaussian(torch.tensor([0.0, 0.0], dtype=torch.float64), torch.tensor([1.0, 1.0], dtype=torch.float64))

    def denoiser(x, sigma, label=None):
        return (uncond_model if label is None else cond_model)(x, sigma)

    counted = NFECounter(denoiser)
    x = torch.randn(3, 2, dtype=torch.float64)
    w = 2.5
    out = ClassifierFreeGuidance(counted, w, uncond={"label": None})(x, 0.7, label=3)
    expected = uncond_model(x, 0.7) + w * (cond_model(x, 0.7) - uncond_model(x, 0.7))
    assert torch.allclose(out, expected) and counted.calls == 2
    assert torch.allclose(ClassifierFreeGuidance(denoiser, 0.0, {"label": None})(x, 0.7, label=1), uncond_model(x, 0.7))
    assert torch.allclose(ClassifierFreeGuidance(denoiser, 1.0, {"label": None})(x, 0.7, label=1), cond_model(x, 0.7))


def test_bad_sigma_shape_is_reported():
    D = PredictionAdapter(lambda x, t: x, EDM(), "x0")
    with pytest.raises(ValueError, match="sigma must be a scalar or have shape"):
        D(torch.zeros(3, 2), torch.ones(2))
    with pytest.raises(ValueError):
        PredictionAdapter(lambda x, t: x, EDM(), "noise")
