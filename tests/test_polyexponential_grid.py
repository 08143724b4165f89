"""The polyexponential grid is k-diffusion's: log sigma_i = log sigma_min + (1 - i/(n-1))^rho (log sigma_max -
log sigma_min), so a rho ported from there gives the same grid."""

import math

import pytest
import torch

from samplerlab.grids import GridError, polyexponential


@pytest.mark.parametrize("rho", [0.5, 1.0, 2.0, 3.0])
def test_polyexponential_follows_k_diffusion_formula(rho):
    n, lo, hi = 10, 0.03, 14.6
    got = polyexponential(n, sigma_min=lo, sigma_max=hi, rho=rho)
    ramp = torch.linspace(1, 0, n, dtype=torch.float64) ** rho
    expected = torch.exp(ramp * (math.log(hi) - math.log(lo)) + math.log(lo))
    assert torch.allclose(got[:-1], expected, rtol=1e-12) and float(got[-1]) == 0.0
    assert float(got[0]) == hi and float(got[-2]) == lo


def test_larger_rho_crowds_the_levels_near_sigma_min():
    a = polyexponential(12, sigma_min=0.002, sigma_max=80.0, rho=1.0, final_zero=False)
    b = polyexponential(12, sigma_min=0.002, sigma_max=80.0, rho=3.0, final_zero=False)
    assert bool((b[1:-1] < a[1:-1]).all())


@pytest.mark.parametrize("rho", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_rho_is_named(rho):
    with pytest.raises(GridError, match="rho"):
        polyexponential(5, sigma_min=0.1, sigma_max=10.0, rho=rho)
