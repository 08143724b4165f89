"""Calibrated few-step sampling: the grid parameterisation, the level shift, grid files, and calibration itself
judged on held-out seeds by two errors (trajectory RMS to the teacher and the distribution's sliced W2, with
the NLL gap's sign) on exact analytic models."""

import json
import math

import numpy as np
import pytest
import torch

from samplerlab.calibration import CalibrationMethod, GridParameters, SeedSplit, Target, calibrate, learn, solve_teacher
from samplerlab.cli import main
from samplerlab.denoisers import LevelShift
from samplerlab.grids import GridError, GridFile, karras, make_grid
from samplerlab.noise import SampleNoise
from samplerlab.problems import make_problem
from samplerlab.processes import EDM
from samplerlab.sampling import sample
from samplerlab.solvers import make_solver

SMALL = SeedSplit(range(0, 64), range(1000, 1064), range(2000, 2400))


def test_grid_parameters_round_trip_any_grid():
    params = GridParameters(80.0, 0.002, 6)
    grid = karras(6, EDM(), sigma_min=0.01)
    again = params.grid(params.theta_of(grid))
    assert torch.allclose(again, grid, rtol=1e-12)
    rng = np.random.default_rng(0)
    for _ in range(20):  # every parameter vector is a valid grid between the ends
        g = params.grid(rng.normal(scale=3, size=5))
        assert g[0] == 80.0 and g[-1] == 0.0 and bool((g[:-1] > g[1:]).all()) and float(g[-2]) >= 0.002


def test_level_shift_is_the_model_at_the_shifted_levels():
    model = make_problem("gauss16").model
    grid = karras(4, EDM())
    same = LevelShift(model, grid, grid[:-1].tolist())
    x = SampleNoise(range(8), dtype=torch.float64).randn(16) * 80.0
    plain = sample(model, x, grid, make_solver("dpm-solver++")).x
    assert torch.equal(sample(same, x, grid, make_solver("dpm-solver++")).x, plain)

    shifted = LevelShift(model, grid, (grid[:-1] * 2).tolist())
    levels = torch.tensor([80.0, 3.0, 1e-4, 1e3], dtype=torch.float64)
    assert torch.allclose(shifted.model_sigma(levels), 2 * levels)  # a constant factor, also beyond the ends
    two = LevelShift(model, [10.0, 1.0, 0.0], [20.0, 1.0])  # log-offsets log 2 and 0: log-linear between
    mid = torch.tensor(math.sqrt(10.0), dtype=torch.float64)
    assert float(two.model_sigma(mid)) == pytest.approx(math.sqrt(10.0) * math.sqrt(2.0))
    with pytest.raises(ValueError, match="one finite positive level per positive grid level"):
        LevelShift(model, grid, [1.0, 2.0])


def test_grid_files_round_trip_and_bad_files_are_named(tmp_path):
    good = GridFile((80.0, 1.0, 0.1, 0.0), (70.0, 1.2, 0.1), {"solver": "ipndm", "nfe": 3})
    path = good.write(tmp_path / "g.json")
    assert GridFile.read(path) == good
    assert make_grid(str(path), 3, EDM()).tolist() == [80.0, 1.0, 0.1, 0.0]
    with pytest.raises(GridError, match="has 3 steps, not 4: it was made for ipndm at 3 NFE"):
        make_grid(str(path), 4, EDM())
    with pytest.raises(ValueError, match="no grid parameters"):
        make_grid(str(path), 3, EDM(), rho=7)
    cases = {
        "notjson.json": ("{sigmas", "not valid JSON"),
        "list.json": ("[1, 2]", "expected a JSON object"),
        "newer.json": (json.dumps({"format": 99, "sigmas": [1.0, 0.0]}), "format 99"),
        "rising.json": (json.dumps({"sigmas": [1.0, 2.0, 0.0]}), "strictly decreasing"),
        "shifts.json": (json.dumps({"sigmas": [2.0, 1.0, 0.0], "model_sigmas": [1.0]}), "model_sigmas"),
    }
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(GridError, match=message) as err:
            GridFile.read(tmp_path / name)
        assert name in str(err.value)


@pytest.mark.parametrize("method", list(CalibrationMethod))
def test_calibration_beats_the_best_builtin_grid_on_held_out_seeds(method):
    """ring, iPNDM at 5 NFE: the calibrated sampler's trajectory error on test seeds is well under the best
    built-in grid's, and its distribution is not worse (sliced W2, and the NLL gap no further from 0)."""
    problem = make_problem("ring")
    target = Target(problem.model, EDM(), (2,))
    grid_file, report = calibrate(target, "ipndm", 5, method=method, seeds=SMALL, max_evaluations=300)
    assert report.nfe == 5 and grid_file.num_steps == 5 and grid_file.provenance["nfe"] == 5
    assert report.rms_ratio < 0.5, report.lines()
    assert not report.distribution_worse and report.calibrated_test.sw2 <= report.baseline_test.sw2
    assert abs(report.nll_gap_calibrated) <= abs(report.nll_gap_baseline)
    assert (grid_file.model_sigmas is not None) == (method is CalibrationMethod.GRID_SHIFT)


def test_a_fit_is_resumable(tmp_path):
    problem = make_problem("ring")
    target = Target(problem.model, EDM(), (2,))
    solver = make_solver("ipndm")
    fit, val = solve_teacher(target, SMALL.fit), solve_teacher(target, SMALL.validation)
    start = karras(5, EDM())
    state = tmp_path / "state.json"

    class Interrupt:
        def __init__(self, after):
            self.after, self.n = after, 0

        def update(self, k):
            self.n += k
            if self.n >= self.after:
                raise KeyboardInterrupt

        def set_postfix(self, **kw):
            pass

    with pytest.raises(KeyboardInterrupt):
        learn(target, solver, 5, CalibrationMethod.GRID, fit, val, start, max_evaluations=200, check_every=20,
              state_path=state, state_key="k", progress=Interrupt(70))
    saved = json.loads(state.read_text())
    assert saved["evaluations"] == 60  # written at each check: the last one before the interruption
    resumed = learn(target, solver, 5, CalibrationMethod.GRID, fit, val, start, max_evaluations=200,
                    check_every=20, state_path=state, state_key="k")
    assert 60 < resumed.evaluations <= 200
    assert resumed.validation.rms <= saved["best_rms"]
    other = learn(target, solver, 5, CalibrationMethod.GRID, fit, val, start, max_evaluations=20,
                  check_every=20, state_path=state, state_key="another model")
    assert other.evaluations == 20  # a state of another calibration is not taken over


def test_calibration_refuses_what_it_cannot_fit():
    target = Target(make_problem("ring").model, EDM(), (2,))
    with pytest.raises(ValueError, match="stochastic"):
        calibrate(target, "euler-ancestral:eta=1", 5, seeds=SMALL)
    with pytest.raises(ValueError, match="adaptive"):
        calibrate(target, "dopri5", 5, seeds=SMALL)
    with pytest.raises(ValueError, match="no level to calibrate"):
        calibrate(target, "euler", 1, seeds=SMALL)
    with pytest.raises(ValueError, match="unknown calibration method 'magic'; valid: grid, grid\\+shift"):
        calibrate(target, "euler", 5, method="magic", seeds=SMALL)
    with pytest.raises(ValueError, match="disjoint"):
        SeedSplit(range(0, 10), range(5, 15), range(100, 110))


def test_the_cli_writes_a_grid_file_that_bench_takes(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = ["calibrate", "--problem", "ring", "--solver", "ipndm", "--nfe", "5", "--fit-samples", "32",
            "--test-samples", "200", "--max-evaluations", "60", "--out", "ring.json", "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "calibrated: RMS to teacher" in out and "--grid ring.json" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ring.json"]  # no state file left
    provenance = GridFile.read(tmp_path / "ring.json").provenance
    for key in ("model_fingerprint", "process", "solver", "nfe", "method", "loss", "seeds", "samplerlab_version"):
        assert key in provenance
    assert main(["bench", "--problems", "ring", "--samples", "64", "--grid", "ring.json", "--solvers", "ipndm",
                 "--nfe", "5,10", "--no-progress"]) == 0
    assert "the grid file has 5 steps; ipndm takes 10" in capsys.readouterr().out
    assert main(["calibrate", "--method", "magic", "--no-progress"]) == 2
    assert "grid+shift" in capsys.readouterr().err
