
import pytest
import torch

from samplerlab.grids import (
    GRIDS,
    GridError,
    exponential,
    from_list,
    karras,
    logsnr_uniform,
    make_grid,
    polyexponential,
    quadratic_time,
    uniform_time,
    validate_grid,
)
from samplerlab.processes import EDM, VE, VPLinear
from samplerlab.registry import UnknownNameError


@pytest.mark.parametrize("name", [n for n in GRIDS.names() if n != "saved"])  # saved: tests/test_step_optimisation.py
@pytest.mark.parametrize("steps", [1, 2, 7, 40])
@pytest.mark.parametrize("final_zero", [True, False])
def test_every_grid_is_valid_and_spans_the_range(name, steps, final_zero):
    p = VPLinear()
    g = make_grid(name, steps, p, final_zero=final_zero)
    assert g.dtype == torch.float64 and g.shape == (steps + 1,)
    assert bool((g[1:] < g[:-1]).all())
    assert float(g[0]) == pytest.approx(p.sigma_max)
    if name in ("flow", "flux"):  # they end where diffusers' flow schedulers end (tests/test_flow_matching.py)
        return
    if final_zero:
        assert float(g[-1]) == 0.0
        if steps > 1:
            assert float(g[-2]) == pytest.approx(p.sigma_min)
    else:
        assert float(g[-1]) == pytest.approx(p.sigma_min)


def test_karras_formula():
    g = karras(4, sigma_min=0.002, sigma_max=80.0, rho=7.0)
    i = torch.arange(4, dtype=torch.float64)
    expected = (80 ** (1 / 7) + i / 3 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    assert torch.allclose(g[:-1], expected) and float(g[-1]) == 0.0


def test_logsnr_uniform_is_geometric_and_polyexponential_generalises_it():
    a = logsnr_uniform(10, EDM())
    assert torch.allclose(a, exponential(10, EDM()))
    assert torch.allclose(a, polyexponential(10, EDM(), rho=1.0))
    lam = -torch.log(a[:-1])
    assert torch.allclose(lam[1:] - lam[:-1], (lam[1] - lam[0]).expand(9))


def test_time_grids_follow_the_process():
    p = VPLinear()
    g = uniform_time(5, p, final_zero=False)
    assert torch.allclose(p.t_of_sigma(g), torch.linspace(1.0, 1e-3, 6, dtype=torch.float64))
    # EDM: sigma = t, so uniform time is uniform sigma
    assert torch.allclose(uniform_time(4, EDM(), final_zero=False), torch.linspace(80, 0.002, 5, dtype=torch.float64))
    q = p.t_of_sigma(quadratic_time(4, p, final_zero=False)) - 1e-3
    assert torch.allclose(q, (1 - 1e-3) * torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0], dtype=torch.float64) ** 2, atol=1e-12)


@pytest.mark.parametrize("bad, message", [
    ([1.0], "at least 2 levels"),
    ([[1.0, 0.5]], "1-D"),
    ([1.0, 2.0, 0.0], "strictly decreasing; level 0"),
    ([2.0, 1.0, 1.0], "strictly decreasing; level 1"),
    ([1.0, -0.5], "negative"),
    ([float("nan"), 0.0], "non-finite"),
])
def test_invalid_grids_raise_clear_errors(bad, message):
    with pytest.raises(GridError, match=message):
        validate_grid(bad)


def test_grid_must_be_reachable_by_process():
    with pytest.raises(ValueError, match="end the grid at sigma_min"):
        karras(5, VE())
    g = karras(5, VE(), final_zero=False)
    assert float(g[-1]) == pytest.approx(0.01)
    assert torch.equal(from_list([3.0, 1.0, 0.0]), torch.tensor([3.0, 1.0, 0.0], dtype=torch.float64))


def test_bad_arguments():
    with pytest.raises(GridError, match="positive integer"):
        karras(0, EDM())
    with pytest.raises(GridError, match="sigma_min < sigma_max"):
        karras(3, sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(UnknownNameError, match="valid names: karras"):
        make_grid("karas", 3, EDM())
    with pytest.raises(ValueError, match="bad parameters"):
        make_grid("karras", 3, EDM(), rh=3)
