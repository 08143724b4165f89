"""The step to sigma = 0 can keep a solver's order: on grids that end at 0 the Adams methods in sigma (LMS,
rhoAB- and tAB-DEIS) integrate eps = dx_hat/dsigma, which is finite there, down to 0 (their default), and
their fitted convergence order holds to the exact solution at sigma = 0; the first-order final denoising
step ("denoise") stops falling at an O(sigma_min^2) floor."""

import numpy as np
import pytest
import torch

from samplerlab.grids import karras
from samplerlab.noise import SampleNoise
from samplerlab.problems import make_problem
from samplerlab.processes import EDM, VPLinear
from samplerlab.sampling import prior_sample, sample
from samplerlab.solvers import solver_from_spec

GAUSS = make_problem("gauss16").model


def error_to_zero(spec, process, steps, n=32):
    grid = karras(steps, process)  # ends at sigma = 0
    x = prior_sample(process, float(grid[0]), SampleNoise(range(n), dtype=torch.float64), (GAUSS.dim,))
    out = sample(GAUSS, x, grid, solver_from_spec(spec), process=process).x
    s0 = float(process.scale(float(grid[0])))
    exact = GAUSS.ode_flow(x / s0, float(grid[0]), 0.0) * float(process.scale(0.0))
    return float((out - exact).pow(2).mean().sqrt())


WIDE, VP_RANGE = (64, 128, 256, 512), (32, 64, 128, 256)  # on VP an error floor near 5e-7 shows by 512 steps


@pytest.mark.parametrize("spec, order, process, steps", [
    ("lms", 4, EDM(), WIDE), ("deis-rhoab", 3, EDM(), WIDE), ("deis-rhoab:order=2", 2, VPLinear(), WIDE),
    ("deis-tab", 3, VPLinear(), VP_RANGE), ("deis-tab:order=4", 4, VPLinear(), (64, 128, 256)),
    # the exponential integrators leave lambda for sigma on the last step when asked (final=extrapolate)
    ("dpm-solver++:order=3:final=extrapolate", 3, EDM(), WIDE),
    ("dpm-solver:multistep=true:order=3:final=extrapolate", 3, EDM(), WIDE),
    ("unipc:order=3:final=extrapolate", 4, EDM(), VP_RANGE),
], ids=lambda v: getattr(v, "name", v) if not isinstance(v, tuple) else "")
def test_order_holds_down_to_sigma_zero(spec, order, process, steps):
    errors = [error_to_zero(spec, process, n) for n in steps]
    fitted = -np.polyfit(np.log(steps), np.log(errors), 1)[0]
    assert abs(fitted - order) < 0.3, f"{spec}: fitted order {fitted:.2f}, errors {errors}"


def test_denoising_final_step_has_a_floor_that_extrapolation_removes():
    process = EDM()
    denoise = [error_to_zero("lms:final=denoise", process, n) for n in (256, 512)]
    extrapolate = [error_to_zero("lms", process, n) for n in (256, 512)]
    assert denoise[1] > 0.7 * denoise[0]  # flat: the first-order last step dominates
    assert extrapolate[1] < 0.01 * denoise[1]


def test_unknown_final_step_is_named():
    with pytest.raises(ValueError, match="unknown final step 'exact'; valid: denoise, extrapolate"):
        solver_from_spec("lms:final=exact")
