"""Where users run samplers: 5-10 model calls. On every bundled problem, at NFE 5, 6, 8 and 10 on Karras'
grid (rho 7, sigma 80 -> 0.002 -> 0), every fixed-step solver's distance to the exact probability-flow ODE
solution from the same noise is finite and within 3x of the first-order baseline's (Euler = DDIM eta 0
under EDM) at the same NFE. The exceptions are listed below with the reason each is expected; each is
also explained in its solver's docstring. And the identities that must hold exactly are checked at
these budgets too, not only at many steps."""

import pytest
import torch

from samplerlab.grids import karras
from samplerlab.metrics import reference_ode_solution
from samplerlab.noise import SampleNoise
from samplerlab.problems import make_problem
from samplerlab.processes import EDM
from samplerlab.sampling import sample
from samplerlab.solvers import SOLVERS, make_solver, solver_from_spec

NFES = (5, 6, 8, 10)
PROBLEMS = ("ring", "gmm64", "gauss16")
EDM_PROCESS = EDM()

# every deterministic fixed-step solver, with the variants users pick
SPECS = [
    "euler", "heun", "ddim", "crash:eta=0", "euler-ancestral:eta=0",
    "dpm-solver:order=1", "dpm-solver", "dpm-solver:order=3", "dpm-solver:multistep=true",
    "dpm-solver:order=3:multistep=true", "dpm-solver++", "dpm-solver++:order=3", "dpm-solver++:multistep=false",
    "dpm-solver++:order=3:multistep=false", "deis-tab:order=2", "deis-tab", "deis-tab:order=4", "deis-rhoab", "lms",
    "ipndm", "deis-rhork:tableau=heun", "deis-rhork:tableau=kutta3", "deis-rhork", "unipc:order=1", "unipc",
    "unipc:order=3", "unipc:corrector=false", "unipc:variant=bh1", "unipc:order=3:variant=bh1",
]

_STAGES = ("2-3 model calls per step leave 2-5 steps for sigma 80 -> 0.002, too few for a multi-stage method: "
           "its higher order pays only from about 20 NFE (the order tests)")
_SHARP = ("the ring's modes have std 0.03: extrapolating D across the steps in which the modes separate "
          "overshoots; first order wins there at 5-6 NFE and the multistep methods overtake it by 8-20 NFE")
_BH1 = ("UniPC bh1 fixes a_1 = 1/2 with B(h) = h (Zhao et al. 2023): the derivative term is weighted h / 2, "
        "far above its exact h phi_2(-h) when the step in log-SNR exceeds 1, as it does on Karras grids at "
        "<= 10 steps; bh2 (the default) weights it (1 - e^-h) / 2")
# (spec, problem) -> (NFE budgets excused, why); anything not listed must pass
EXCEPTIONS = {
    **{(s, p): (NFES, _STAGES) for s in ("heun", "deis-rhork:tableau=heun", "deis-rhork:tableau=kutta3",
                                          "deis-rhork", "dpm-solver", "dpm-solver:order=3") for p in PROBLEMS},
    ("dpm-solver++", "ring"): ((5, 6), _SHARP),
    ("dpm-solver:multistep=true", "ring"): ((5, 6), _SHARP),
    ("dpm-solver:order=3:multistep=true", "ring"): ((5, 6), _SHARP),
    ("unipc", "ring"): ((5, 6), _SHARP),
    ("unipc:corrector=false", "ring"): ((5, 6), _SHARP),
    ("ipndm", "ring"): ((5, 6), _SHARP),
    ("dpm-solver++:order=3", "ring"): (NFES, _SHARP),
    ("unipc:order=3", "ring"): (NFES, _SHARP),
    ("dpm-solver++:order=3:multistep=false", "ring"): ((6, 8, 10), _SHARP + "; " + _STAGES),
    **{("unipc:variant=bh1", p): (NFES, _BH1) for p in PROBLEMS},
    **{("unipc:order=3:variant=bh1", p): (NFES, _BH1) for p in PROBLEMS},
}


@pytest.fixture(scope="module")
def errors():
    """RMS error per sample, averaged, of every spec at every budget on every problem (100 samples)."""
    out = {}
    for name in PROBLEMS:
        model = make_problem(name).model
        x = SampleNoise(range(100), dtype=torch.float64).randn(model.dim) * 80.0
        exact = reference_ode_solution(model, x, 80.0, 0.0)
        for spec in SPECS:
            solver = solver_from_spec(spec)
            for nfe in NFES:
                steps = solver.steps_within(nfe)
                result = sample(model, x, karras(steps, EDM_PROCESS), solver, process=EDM_PROCESS)
                assert result.nfe <= nfe
                out[spec, name, nfe] = float((result.x - exact).pow(2).mean(1).sqrt().mean())
    return out


def test_every_deterministic_fixed_step_solver_is_covered():
    covered = {solver_from_spec(s).name for s in SPECS}
    fixed = {n for n in SOLVERS.names() if not make_solver(n).stochastic and not make_solver(n).adaptive}
    assert fixed <= covered, f"add {sorted(fixed - covered)} to the low-NFE test"


@pytest.mark.parametrize("problem", PROBLEMS)
@pytest.mark.parametrize("spec", SPECS)
def test_low_nfe_error_is_finite_and_near_first_order(errors, spec, problem):
    excused, why = EXCEPTIONS.get((spec, problem), ((), ""))
    for nfe in NFES:
        err, baseline = errors[spec, problem, nfe], errors["euler", problem, nfe]
        assert err == err and err < 1e3, f"{spec} on {problem} at NFE {nfe}: error {err}"
        if nfe not in excused:
            assert err <= 3 * baseline, f"{spec} on {problem} at NFE {nfe}: {err:.3g} vs Euler's {baseline:.3g}"


def test_exceptions_are_still_needed(errors):
    """An exception that no longer fails at any of its budgets is removed from the list (it would hide a
    regression)."""
    stale = [(spec, problem) for (spec, problem), (nfes, _) in EXCEPTIONS.items()
             if all(errors[spec, problem, n] <= 3 * errors["euler", problem, n] for n in nfes)]
    assert not stale, f"these now pass: drop them from EXCEPTIONS: {stale}"


@pytest.mark.parametrize("problem", PROBLEMS)
@pytest.mark.parametrize("nfe", NFES)
def test_identities_hold_at_low_nfe(problem, nfe):
    model = make_problem(problem).model
    x = SampleNoise(range(20), dtype=torch.float64).randn(model.dim) * 80.0
    grid = karras(nfe, EDM_PROCESS)

    def run(spec):
        return sample(model, x, grid, solver_from_spec(spec), process=EDM_PROCESS).x

    # UniP-2 with B(h) = 1 - e^-h and a_1 = 1/2 is DPM-Solver++(2M) (Zhao et al. 2023, Sec. 3.2)
    assert torch.allclose(run("unipc:corrector=false"), run("dpm-solver++"), rtol=1e-9, atol=1e-11)
    # under EDM (s = 1, sigma = t) DDIM with eta = 0 is Euler (Karras et al. 2022, Sec. 3), and so are
    # CRASH and Euler ancestral without noise
    euler = run("euler")
    for spec in ("ddim", "crash:eta=0", "euler-ancestral:eta=0"):
        assert torch.allclose(run(spec), euler, rtol=1e-11, atol=1e-12), spec
