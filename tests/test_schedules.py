import pytest
import torch
from scipy.integrate import solve_ivp

from samplerlab.grids import time_steps
from samplerlab.processes import OUVE
from samplerlab.schedules import SHAPES, Schedule, ScheduledProcess, make_shape

STEEPNESS = [0.7, 1.0, 1.05, 1.2, 1.5]


@pytest.mark.parametrize("shape", SHAPES.names())
@pytest.mark.parametrize("alpha", STEEPNESS)
def test_normalised_schedule_hits_its_endpoints_and_is_monotone(shape, alpha):
    sched = Schedule(make_shape(shape), 0.05, 2.0, tau_min=0.03, steepness=alpha)
    assert float(sched.sigma(0.03)) == pytest.approx(0.05, rel=1e-10)
    assert float(sched.sigma(1.0)) == pytest.approx(2.0, rel=1e-10)
    tau = torch.linspace(0.03, 1.0, 500, dtype=torch.float64)
    assert bool((torch.diff(sched.sigma(tau)) > 0).all())


@pytest.mark.parametrize("shape", SHAPES.names())
def test_steepness_one_is_the_plain_normalised_shape(shape):
    f = make_shape(shape).f
    tau = torch.linspace(0.03, 1.0, 50, dtype=torch.float64)
    plain = 0.05 + 1.95 * (f(tau) - f(torch.tensor(0.03, dtype=torch.float64))) / (
        f(torch.tensor(1.0, dtype=torch.float64)) - f(torch.tensor(0.03, dtype=torch.float64)))
    assert torch.allclose(Schedule(make_shape(shape), 0.05, 2.0, 0.03, 1.0).sigma(tau), plain)


@pytest.mark.parametrize("shape", SHAPES.names())
@pytest.mark.parametrize("alpha", [1.0, 1.5])
def test_derivative_and_inverse(shape, alpha):
    sched = Schedule(make_shape(shape), 0.05, 2.0, 0.03, alpha)
    tau = torch.linspace(0.05, 0.98, 20, dtype=torch.float64)
    h = 1e-6
    fd = (sched.sigma(tau + h) - sched.sigma(tau - h)) / (2 * h)
    assert torch.allclose(sched.dsigma_dtau(tau), fd, rtol=1e-5)
    assert torch.allclose(sched.tau_of_sigma(sched.sigma(tau)), tau, atol=1e-10)


def test_steepness_changes_the_curve_but_not_its_ends():
    a = Schedule(make_shape("ouve"), 0.05, 2.0, 0.03, 1.0)
    b = Schedule(make_shape("ouve"), 0.05, 2.0, 0.03, 1.5)
    mid = torch.tensor([0.5], dtype=torch.float64)
    assert float(b.sigma(mid)) < float(a.sigma(mid))  # alpha > 1 delays the rise
    with pytest.raises(ValueError, match="steepness"):
        Schedule(make_shape("linear"), 0.05, 2.0, 0.03, 0.0)


def test_baseline_swap_is_the_process_itself():
    base = OUVE()
    same = ScheduledProcess.swap(base, "ouve")
    t = torch.linspace(base.t_min, base.t_max, 30, dtype=torch.float64)
    assert torch.allclose(same.sigma(t), base.sigma(t), rtol=1e-10)
    assert torch.allclose(same.dsigma_dt(t), base.dsigma_dt(t), rtol=1e-8)
    assert torch.allclose(same.diffusion(t), base.diffusion(t), rtol=1e-8)
    assert torch.allclose(same.drift(t), base.drift(t))


@pytest.mark.parametrize("shape", ["linear", "vp", "edm", "ve"])
def test_scheduled_process_moments_are_consistent(shape):
    """The swapped process's s^2 sigma^2 solves dVar/dt = 2 f Var + g^2, as every process must."""
    p = ScheduledProcess.swap(OUVE(), shape, 1.2)
    ta, tb = 0.1, 1.0
    sol = solve_ivp(lambda t, v: [2 * float(p.drift(t)) * v[0] + float(p.diffusion(t)) ** 2], (ta, tb),
                    [float(p.marginal_std(ta)) ** 2], rtol=1e-10, atol=1e-14)
    assert sol.y[0, -1] == pytest.approx(float(p.marginal_std(tb)) ** 2, rel=1e-6)
    assert p.sigma_min == pytest.approx(OUVE().sigma_min) and p.sigma_max == pytest.approx(OUVE().sigma_max)


def test_time_step_transforms():
    p = OUVE()
    uniform = time_steps(10, p, final_zero=False)
    t_uniform = p.t_of_sigma(uniform)
    assert torch.allclose(t_uniform, torch.linspace(1.0, 0.03, 11, dtype=torch.float64))
    # timestep offset: every time scaled by alpha, sigma read from the unmodified schedule
    offset = time_steps(10, p, offset=0.8, final_zero=False)
    assert torch.allclose(p.t_of_sigma(offset), 0.8 * t_uniform, atol=1e-12)
    assert torch.equal(time_steps(10, p, offset=1.0, power=1.0), time_steps(10, p))
    # power warp: same ends, steps compressed toward the end of sampling
    warped = p.t_of_sigma(time_steps(10, p, power=2.0, final_zero=False))
    assert float(warped[0]) == pytest.approx(1.0) and float(warped[-1]) == pytest.approx(0.03)
    assert float(warped[-2] - warped[-1]) < float(t_uniform[-2] - t_uniform[-1])
    assert bool((torch.diff(warped) < 0).all())
    with pytest.raises(ValueError, match="offset"):
        time_steps(10, p, offset=1.2)


# --- the seed-000 study's reading: shapes as SGMSE+'s diffusion sigma on 0.05..0.5 ------------------------


def test_the_diffusion_reading_of_the_base_is_ouve_itself():
    from samplerlab.schedules import Normalisation

    base = OUVE()
    same = ScheduledProcess.swap(base, "ouve", normalisation=Normalisation.DIFFUSION)
    t = torch.linspace(0.03, 1.0, 37, dtype=torch.float64)
    assert torch.allclose(same.sigma(t), base.sigma(t), rtol=1e-11)
    assert torch.allclose(same.dsigma_dt(t), base.dsigma_dt(t), rtol=1e-11)
    assert torch.allclose(same.diffusion(t), base.diffusion(t), rtol=1e-12)
    assert torch.allclose(same.t_of_sigma(base.sigma(t)), t, atol=1e-12)


@pytest.mark.parametrize("shape", ["linear", "vp", "subvp", "edm", "ve"])
@pytest.mark.parametrize("steepness", [1.0, 1.5])
def test_the_diffusion_reading_rescales_the_diffusion_sigma_and_integrates_the_variance(shape, steepness):
    """sigma_d runs from sigma_lo = 0.05 to sigma_hi = 0.5; the marginal solves dVar/dt = 2 f Var + g^2 from
    Var(0) = 0 (checked by an independent ODE solve); sigma' and the inverse agree with sigma."""
    import math

    base = OUVE()
    p = ScheduledProcess.swap(base, shape, steepness, normalisation="diffusion")
    g_scale = math.sqrt(2 * math.log(base.sigma_hi / base.sigma_lo))
    assert float(p.diffusion(0.0)) / g_scale == pytest.approx(0.05) and float(p.diffusion(1.0)) / g_scale == pytest.approx(0.5)
    sol = solve_ivp(lambda t, v: [2 * float(p.drift(t)) * v[0] + float(p.diffusion(t)) ** 2], (0.0, 1.0), [0.0],
                    rtol=1e-11, atol=1e-15, dense_output=True)
    for t in (0.03, 0.2, 0.6, 1.0):
        assert sol.sol(t)[0] == pytest.approx(float(p.marginal_std(t)) ** 2, rel=1e-8)
    t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    h = 1e-6
    fd = (p.sigma(t + h) - p.sigma(t - h)) / (2 * h)
    assert torch.allclose(fd, p.dsigma_dt(t), rtol=1e-6)
    assert torch.allclose(p.t_of_sigma(p.sigma(t)), t, atol=1e-10)


def test_the_two_readings_differ_and_bad_names_are_refused():
    from samplerlab.processes import VE

    marginal, diffusion = ScheduledProcess.swap(OUVE(), "vp"), ScheduledProcess.swap(OUVE(), "vp", normalisation="diffusion")
    assert marginal.sigma_max == pytest.approx(OUVE().sigma_max)  # the marginal reading keeps the base's range
    assert diffusion.sigma_max == pytest.approx(1.125, abs=1e-3)  # the study's reading moves it
    with pytest.raises(ValueError, match=r"unknown normalisation 'sgmse'; valid: marginal .*, diffusion"):
        ScheduledProcess.swap(OUVE(), "vp", normalisation="sgmse")
    with pytest.raises(ValueError, match=r"only the OUVE process has \(base process: 've'\)"):
        ScheduledProcess.swap(VE(), "vp", normalisation="diffusion")
