import math

import pytest
import torch
from scipy.integrate import solve_ivp

from samplerlab.processes import EDM, OUVE, PROCESSES, VE, RectifiedFlow, SubVP, VPCosine, VPLinear, make_process
from samplerlab.registry import UnknownNameError

ALL = [EDM(), VE(), VPLinear(), VPCosine(), SubVP(), OUVE(), OUVE(theta=0.5, sigma_lo=0.1, sigma_hi=1.0),
       RectifiedFlow()]


def _times(p, n=7):
    return torch.linspace(p.t_min + 0.01 * (p.t_max - p.t_min), p.t_max, n, dtype=torch.float64)


@pytest.mark.parametrize("p", ALL, ids=repr)
def test_marginal_variance_solves_moment_ode(p):
    """Closed-form s^2 sigma^2 equals the numerical solution of dVar/dt = 2 f Var + g^2."""
    ta, tb = float(_times(p)[0]), p.t_max
    var0 = float(p.marginal_std(ta)) ** 2

    def rhs(t, v):
        return [2 * float(p.drift(t)) * v[0] + float(p.diffusion(t)) ** 2]

    sol = solve_ivp(rhs, (ta, tb), [var0], method="DOP853", rtol=1e-11, atol=1e-14, dense_output=True)
    for t in _times(p)[1:]:
        assert sol.sol(float(t))[0] == pytest.approx(float(p.marginal_std(t)) ** 2, rel=1e-7)


@pytest.mark.parametrize("p", ALL, ids=repr)
def test_mean_coefficient_solves_drift_ode(p):
    """ds/dt = f s: the mean of x_t given x_0 follows the SDE's drift."""
    t = _times(p)
    assert torch.allclose(p.ds_dt(t), p.drift(t) * p.s(t), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("p", ALL, ids=repr)
def test_derivatives_match_finite_differences(p):
    t = _times(p)[:-1]
    h = 1e-6 * (p.t_max - p.t_min)
    fd_s = (p.s(t + h) - p.s(t - h)) / (2 * h)
    fd_sigma = (p.sigma(t + h) - p.sigma(t - h)) / (2 * h)
    assert torch.allclose(p.ds_dt(t), fd_s, rtol=1e-6, atol=1e-9)
    assert torch.allclose(p.dsigma_dt(t), fd_sigma, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("p", ALL, ids=repr)
def test_time_of_sigma_inverts_sigma(p):
    t = _times(p, 11)
    assert torch.allclose(p.t_of_sigma(p.sigma(t)), t, rtol=1e-9, atol=1e-10)


def test_known_values():
    vp = VPLinear()
    # Karras et al. 2022 Table 1: sigma(t) = sqrt(exp(0.5 beta_d t^2 + beta_min t) - 1)
    assert float(vp.sigma(1.0)) == pytest.approx(math.sqrt(math.exp(0.5 * 19.9 + 0.1) - 1))
    assert float(SubVP().sigma(0.0)) == 0.0 and float(VPLinear().sigma(0.0)) == 0.0
    assert float(VE().sigma(1.0)) == pytest.approx(50.0) and float(VE().sigma(0.0)) == pytest.approx(0.01)
    ouve = OUVE()
    # Richter et al. 2023: Var(t) = sigma_min^2 (r^{2t} - e^{-2 theta t}) log r / (theta + log r)
    r = ouve.sigma_hi / ouve.sigma_lo
    var1 = ouve.sigma_lo**2 * (r**2 - math.exp(-2 * ouve.theta)) * math.log(r) / (ouve.theta + math.log(r))
    assert float(ouve.marginal_std(1.0)) ** 2 == pytest.approx(var1)
    assert ouve.prior_std() == pytest.approx(math.sqrt(var1))
    assert float(VPCosine().s(0.0)) == pytest.approx(1.0)


def test_ve_cannot_reach_zero_and_says_so():
    with pytest.raises(ValueError, match="sigma_min=0.01"):
        VE().check_sigma_reachable(0.0)
    EDM().check_sigma_reachable(0.0)


def test_registry_errors_list_valid_names():
    with pytest.raises(UnknownNameError, match="unknown process .vpp.; valid names: edm, ve, vp"):
        make_process("vpp")
    with pytest.raises(ValueError, match="bad parameters"):
        make_process("vp", beta=3)
    assert set(PROCESSES.names()) == {"edm", "ve", "vp", "vp-cosine", "subvp", "ouve", "rectified-flow"}


def test_rectified_flow_is_the_linear_path():
    """x_t = (1 - t) x_0 + t eps (Liu et al. 2022; Esser et al. 2024, eq. 3): s = 1 - t and s sigma = t."""
    p = make_process("rectified-flow")
    t = torch.linspace(0.0, 0.999, 9, dtype=torch.float64)
    assert torch.allclose(p.s(t), 1 - t) and torch.allclose(p.marginal_std(t), t)
    assert torch.allclose(p.scale(p.sigma(t)), 1 - t, rtol=1e-12)
    # far from 0 the scale keeps its relative precision where 1 - t(sigma) would cancel
    assert float(p.scale(1e12)) == pytest.approx(1e-12, rel=1e-9)
    assert p.sigma_max == pytest.approx(9999.0) and p.prior_std() == pytest.approx(1 - 1e-4)
    # the probability-flow ODE is the flow: dx/dt = (x - D) / t, i.e. (s'/s + sigma'/sigma) = s sigma'/sigma = 1/t
    for v in (0.1, 0.5, 0.9):
        tt = torch.tensor(v, dtype=torch.float64)
        a = p.ds_dt(tt) / p.s(tt) + p.dsigma_dt(tt) / p.sigma(tt)
        b = p.s(tt) * p.dsigma_dt(tt) / p.sigma(tt)
        assert float(a) == pytest.approx(1 / v) and float(b) == pytest.approx(1 / v)


@pytest.mark.parametrize("params, message", [
    ({"t_max": 1.0}, "t_max must be < 1"), ({"t_max": 1.5}, "t_max must be < 1"),
    ({"t_min": -0.1}, "t_min must be a finite number >= 0"), ({"t_min": 0.5, "t_max": 0.2}, "t_min < t_max"),
])
def test_rectified_flow_refuses_times_outside_its_range(params, message):
    with pytest.raises(ValueError, match=message):
        make_process("rectified-flow", **params)
