"""Bad input gets a clear error before any work: the CLI answers with one line on stderr naming the bad value
(exit status 2), prints no traceback and leaves no file behind; the API raises ValueError naming it.

Most cases call the CLI's entry point in-process (fast); a few run the real console script, to check the exit
status and stderr end to end. Property-based cases (hypothesis) cover spec strings, seeds and grid sizes.
"""

import math
import os
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from samplerlab.cli import main
from samplerlab.grids import make_grid
from samplerlab.noise import SampleNoise
from samplerlab.processes import EDM, make_process
from samplerlab.sampling import NonFiniteError, generate, sample
from samplerlab.solvers import make_solver, solver_from_spec

FAST = ["--problems", "ring", "--samples", "8", "--no-progress"]

# (arguments, text the one-line message must contain); exit status 2 for all of them
CLI_CASES = [
    # bench: outputs, budgets, counts, seeds
    (["bench", "--out", "afile", *FAST], "afile exists and is not a folder"),
    (["bench", "--out", "afile/out", *FAST], "afile/out: afile is not a folder"),
    (["bench", "--nfe", "0", *FAST], "got 0"),
    (["bench", "--nfe", "-5", *FAST], "got -5"),
    (["bench", "--nfe", "abc", *FAST], "'abc'"),
    (["bench", "--nfe", "", *FAST], "integers"),
    (["bench", "--nfe", "100000000", "--solvers", "euler", *FAST], "100000000"),
    (["bench", "--samples", "0", "--no-progress"], "'0'"),
    (["bench", "--samples", "many", "--no-progress"], "'many'"),
    (["bench", "--seed", "-1", *FAST], "'-1'"),
    (["bench", "--seed", "1.5", *FAST], "'1.5'"),
    (["bench", "--dtype", "float16", *FAST], "float16"),
    (["bench", "--tolerances", "0", "--solvers", "dopri5", *FAST], "positive"),
    (["bench", "--tolerances", "nan", "--solvers", "dopri5", *FAST], "'nan'"),
    # bench: solver specs and their parameters
    (["bench", "--solvers", "nosuch", *FAST], "nosuch"),
    (["bench", "--solvers", "ddim:eta=abc", *FAST], "'abc'"),
    (["bench", "--solvers", "ddim:eta=-1", *FAST], "-1"),
    (["bench", "--solvers", "ddim:eta=nan", *FAST], "nan"),
    (["bench", "--solvers", "ddim:eta=inf", *FAST], "inf"),
    (["bench", "--solvers", "ddim:etaa=0.5", *FAST], "etaa"),
    (["bench", "--solvers", "unipc:order", *FAST], "unipc:order"),
    (["bench", "--solvers", "unipc:order=7", *FAST], "7"),
    (["bench", "--solvers", "unipc:variant=bh3", *FAST], "bh3"),
    (["bench", "--solvers", "dpm-solver++:order=9", *FAST], "9"),
    (["bench", "--solvers", "dpm-solver++:final=later", *FAST], "later"),
    (["bench", "--solvers", "edm-stochastic:s_churn=-1", *FAST], "-1"),
    (["bench", "--solvers", "edm-stochastic:s_noise=nan", *FAST], "nan"),
    (["bench", "--solvers", "crash:eta=-2", *FAST], "-2"),
    (["bench", "--solvers", "pc:snr=-0.1", *FAST], "-0.1"),
    (["bench", "--solvers", "pc:corrector=nosuch", *FAST], "nosuch"),
    (["bench", "--solvers", "lms:order=9", *FAST], "9"),
    (["bench", "--solvers", "dopri5:rtol=0", *FAST], "rtol=0"),
    (["bench", "--solvers", "dopri5:variable=sigma", *FAST], "sigma"),
    (["bench", "--solvers", "ggf:theta=2", *FAST], "2"),
    (["bench", "--solver-param", "ddim.eta", *FAST], "ddim.eta"),
    (["bench", "--solver-param", "ddim.eta=-3", "--solvers", "ddim", *FAST], "-3"),
    # bench: problems, grids, processes
    (["bench", "--problems", "nosuch", "--no-progress"], "nosuch"),
    (["bench", "--grid", "nosuch", *FAST], "nosuch"),
    (["bench", "--grid-param", "rho=0", *FAST], "rho"),
    (["bench", "--grid-param", "rho=abc", *FAST], "abc"),
    (["bench", "--grid-param", "rho", *FAST], "'rho'"),
    (["bench", "--grid-param", "sigma_min=-1", *FAST], "sigma_min=-1"),
    (["bench", "--process", "nosuch", *FAST], "nosuch"),
    (["bench", "--process-param", "t_max=nan", *FAST], "nan"),
    (["bench", "--process-param", "t_min=-1", *FAST], "-1"),
    (["bench", "--process-param", "t_mx=80", *FAST], "t_mx"),
    # schedules plot
    (["schedules", "plot", "--out", "adir"], "adir is a folder"),
    (["schedules", "plot", "--out", "plot.txt"], "plot.txt"),
    (["schedules", "plot", "--out", "afile/sub/plot.png"], "afile is not a folder"),
    # sample
    (["sample", "--steps", "0"], "'0'"),
    (["sample", "--out", "samples.txt"], "samples.txt"),
    (["sample", "--cfg", "nan"], "'nan'"),
    (["sample", "--class-label", "-1"], "'-1'"),
    # likelihood
    (["likelihood", "--samples", "0"], "'0'"),
    (["likelihood", "--rtol", "0"], "'0'"),
    (["likelihood", "--rtol=-1e-5"], "'-1e-5'"),
    (["likelihood", "--sigma-max", "nan"], "'nan'"),
    (["likelihood", "--probes", "0"], "'0'"),
    (["likelihood", "--seed", "-3"], "'-3'"),
    (["likelihood", "--problem", "nosuch"], "nosuch"),
    # train
    (["train", "--checkpoint-every", "0", "--out", "t"], "'0'"),
    (["train", "--steps", "0", "--out", "t"], "'0'"),
    (["train", "--dropout", "2", "--out", "t"], "'2'"),
    (["train", "--dropout", "-0.1", "--out", "t"], "'-0.1'"),
    (["train", "--hidden", "0", "--out", "t"], "'0'"),
    (["train", "--depth", "-1", "--out", "t"], "'-1'"),
    (["train", "--seed", "-1", "--out", "t"], "'-1'"),
    (["train", "--device", "foo", "--out", "t"], "foo"),
    (["train", "--out", "afile"], "afile exists and is not a folder"),
    # run, enhance, speech
    (["run", "missing.toml"], "missing.toml"),
    (["run", "afile", "--out", "afile"], "afile"),
    (["enhance", "--out", "afile"], "afile"),
    (["enhance", "--snr", "nan"], "'nan'"),
    (["enhance", "--snr", "-1"], "'-1'"),
    (["enhance", "--steps", "0"], "'0'"),
    (["speech", "make-corpus", "--out", "afile"], "afile"),
    (["speech", "make-corpus", "--snr-min", "nan"], "'nan'"),
    (["speech", "train", "--steps", "0"], "'0'"),
    (["speech", "train", "--lr", "0"], "'0'"),
    (["speech", "eval", "--out", "figures.txt"], "figures.txt"),
    # sizes: refused before anything is allocated, tolerances that cannot be met refused before any step
    (["bench", "--samples", "100000000000", "--no-progress"], "at most 10000000"),
    (["bench", "--tolerances", "1e-300", "--solvers", "dopri5", *FAST], "1e-300"),
    (["bench", "--tolerances", "1e-7", "--solvers", "dopri5", *FAST], "below what torch.float32 resolves"),
    (["train", "--batch-size", "1000000000", "--out", "t"], "at most 65536"),
    (["train", "--samples", "100000000000", "--out", "t"], "at most 10000000"),
    (["train", "--lr", "nan", "--out", "t"], "'nan'"),
    (["likelihood", "--samples", "10000000000"], "at most 10000000"),
    (["sample", "--seeds", "0-100000000000"], "more than 1000000 seeds"),
    (["sample", "--seeds", "5-1"], "'5-1'"),
    (["speech", "train", "--batch-size", "1000000000"], "at most 65536"),
    (["eval", "--checkpoint", "x", "--samples", "100000000000"], "at most 10000000"),
    # the command line itself
    (["nosuch"], "nosuch"),
    (["--threads", "abc", "bench"], "'abc'"),
    (["optimise-steps", "--nfe", "0"], "'0'"),
    (["optimise-steps", "--seed", "-1"], "'-1'"),
    (["eval", "--samples", "0"], "'0'"),
]

if torch.cuda.is_available():
    CLI_CASES.remove((["train", "--device", "foo", "--out", "t"], "foo"))
else:
    CLI_CASES.append((["train", "--device", "cuda", "--out", "t"], "CUDA is not available"))


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A folder with a file ``afile`` and a folder ``adir``; the CLI runs there."""
    (tmp_path / "afile").write_text("not a folder")
    (tmp_path / "adir").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("args, message", CLI_CASES, ids=[" ".join(a) for a, _ in CLI_CASES])
def test_the_cli_answers_bad_input_in_one_line(args, message, workdir, capsys):
    before = _tree(workdir)
    status = main(args)
    err = capsys.readouterr().err
    assert status == 2, err
    assert message in err, err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert _tree(workdir) == before  # nothing created, nothing half-written


def test_debug_shows_the_traceback(workdir, capsys):
    assert main(["--debug", "bench", "--solvers", "ddim:eta=-1", *FAST]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "eta must be in" in err


@pytest.mark.parametrize(
    "args, status, message",
    [
        (["bench", "--nfe", "0"], 2, "got 0"),
        (["bench", "--solvers", "ddim:eta=abc", "--problems", "ring", "--samples", "8", "--no-progress"], 2, "'abc'"),
    ],
)
def test_the_console_script_end_to_end(args, status, message, tmp_path):
    env = {**os.environ, "SAMPLERLAB_DEBUG": ""}
    done = subprocess.run(
        [sys.executable, "-m", "samplerlab.cli", *args], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert done.returncode == status, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []


# --- TOML experiment files: every key of [experiment] and [[study]] ----------------------------------------

GOOD_EXPERIMENT = {"name": '"x"', "problem": '"ouve-gmm"', "process": '"ouve"', "samples": "8"}
GOOD_STUDY = {"name": '"s"', "solvers": '["euler"]', "schedules": '["base"]', "steps": "[3]"}

# (table, key, TOML value or None to drop the key, text the message must contain)
TOML_CASES = [
    ("experiment", "name", None, "name is required"),
    ("experiment", "name", '""', "name = ''"),
    ("experiment", "name", "3", "name = 3"),
    ("experiment", "problem", None, "problem is required"),
    ("experiment", "problem", '"nosuch"', "nosuch"),
    ("experiment", "process", '"nosuch"', "nosuch"),
    ("experiment", "process", "1", "process = 1"),
    ("experiment", "process_params", '"t_max"', "process_params"),
    ("experiment", "process_params", "{ theta = -1.0 }", "-1.0"),
    ("experiment", "process_params", "{ t_min = 2.0 }", "t_min < t_max"),
    ("experiment", "samples", "-1", "samples = -1"),
    ("experiment", "samples", "0", "samples = 0"),
    ("experiment", "samples", '"many"', "samples = 'many'"),
    ("experiment", "samples", "2.5", "samples = 2.5"),
    ("experiment", "samples", "100000000000", "samples = 100000000000"),
    ("experiment", "seed", "1.5", "seed = 1.5"),
    ("experiment", "seed", "-1", "seed = -1"),
    ("experiment", "seed", '"0"', "seed = '0'"),
    ("experiment", "dtype", '"float16"', "float16"),
    ("experiment", "dtype", "64", "dtype = 64"),
    ("experiment", "metrics", '"snr_db"', "metrics = 'snr_db'"),
    ("experiment", "metrics", '["nosuch"]', "nosuch"),
    ("experiment", "metrics", '["dnsmos_ovrl"]', "dnsmos_ovrl"),
    ("experiment", "corpus", "1", "corpus = 1"),
    ("experiment", "files", "0", "files = 0"),
    ("experiment", "model", "1", "model = 1"),
    ("experiment", "prior", "[]", "prior = []"),
    ("experiment", "dnsmos", "false", "dnsmos = False"),
    ("experiment", "problem2", "1", "unknown key 'problem2'"),
    ("study", "name", None, "name is required"),
    ("study", "solvers", None, "solvers is required"),
    ("study", "solvers", '"heun"', "solvers = 'heun'"),
    ("study", "solvers", "[]", "solvers = []"),
    ("study", "solvers", '["nosuch"]', "nosuch"),
    ("study", "solvers", '["ddim:eta=-1"]', "-1"),
    ("study", "solvers", "[1]", "solvers.0 = 1"),
    ("study", "schedules", '["nosuch"]', "nosuch"),
    ("study", "schedules", '"base"', "schedules = 'base'"),
    ("study", "transforms", '["steepness=abc"]', "steepness=abc"),
    ("study", "transforms", '["twist=2"]', "twist=2"),
    ("study", "steps", '["a"]', "steps.0 = 'a'"),
    ("study", "steps", "[0]", "steps.0 = 0"),
    ("study", "steps", "[1000000]", "steps.0 = 1000000"),
    ("study", "steps", "[2.5]", "steps.0 = 2.5"),
    ("study", "steps", "5", "steps = 5"),
    ("study", "nfe", "[10]", "exactly one of steps"),
    ("study", "stepz", "[3]", "unknown key 'stepz'"),
]


def _toml(table, key, value):
    exp, study = dict(GOOD_EXPERIMENT), dict(GOOD_STUDY)
    target = exp if table == "experiment" else study
    if value is None:
        target.pop(key)
    else:
        target[key] = value
    lines = ["[experiment]"] + [f"{k} = {v}" for k, v in exp.items()]
    return "\n".join(lines + ["[[study]]"] + [f"{k} = {v}" for k, v in study.items()]) + "\n"


def test_the_good_experiment_runs(workdir, capsys):
    (workdir / "good.toml").write_text(_toml("study", "name", '"s"'))
    assert main(["run", "good.toml", "--out", "out", "--no-progress"]) == 0


@pytest.mark.parametrize("table, key, value, message", TOML_CASES, ids=[f"{t}.{k}={v}" for t, k, v, _ in TOML_CASES])
def test_a_bad_experiment_file_is_refused_before_any_work(table, key, value, message, workdir, capsys, monkeypatch):
    monkeypatch.setattr("samplerlab.metrics.dnsmos.bundled_model_dir", lambda: None)  # DNSMOS as without speechmos
    (workdir / "bad.toml").write_text(_toml(table, key, value))
    before = _tree(workdir)
    status = main(["run", "bad.toml", "--out", "out", "--no-progress"])
    err = capsys.readouterr().err
    assert status == 2, err
    assert "bad.toml" in err and message in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert _tree(workdir) == before  # no run folder, no config.json


@pytest.mark.parametrize("text, message", [
    ("[experiment\nname = 1", "not valid TOML"),
    ("[other]\nx = 1", "unknown tables"),
    ("experiment = 3", "as a table"),
])
def test_a_broken_experiment_file_is_named(text, message, workdir, capsys):
    (workdir / "bad.toml").write_text(text)
    assert main(["run", "bad.toml", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "bad.toml" in err and message in err


def test_binary_garbage_is_not_an_experiment(workdir, capsys):
    (workdir / "bad.toml").write_bytes(bytes(range(256)))
    assert main(["run", "bad.toml", "--no-progress"]) == 2
    assert "bad.toml" in capsys.readouterr().err


# --- the API ----------------------------------------------------------------------------------------------

API_CASES = [
    (lambda: SampleNoise([1.5]), "1.5"),
    (lambda: SampleNoise([-1]), "-1"),
    (lambda: SampleNoise([2**64]), str(2**64)),
    (lambda: SampleNoise([]), "at least one seed"),
    (lambda: make_grid("karras", 10**9, EDM()), str(10**9)),
    (lambda: make_grid("karras", 0, EDM()), "0"),
    (lambda: make_grid("karras", 10, EDM(), rho=0), "rho"),
    (lambda: make_grid("karras", 10, EDM(), rho=float("nan")), "nan"),
    (lambda: make_grid("karras", 10, EDM(), sigma_min=float("nan")), "nan"),
    (lambda: make_grid("nosuch", 10, EDM()), "nosuch"),
    (lambda: make_solver("ddim", eta=float("nan")), "nan"),
    (lambda: make_solver("ddim", eta="0.5"), "'0.5'"),
    (lambda: make_solver("unipc", order=True), "True"),
    (lambda: make_solver("heun", order=2), "order"),
    (lambda: solver_from_spec("ddim:eta=-1"), "-1"),
    (lambda: make_solver("edm-stochastic", s_churn=-1.0), "-1"),
    (lambda: make_solver("pc", snr=-1.0), "-1"),
    (lambda: make_process("ouve", theta=-1.0), "-1"),
    (lambda: make_process("ouve", theta=0.0), "theta"),
    (lambda: make_process("ve", sigma_lo=60.0), "sigma_lo <= sigma_hi"),
    (lambda: make_process("edm", t_max=math.inf), "inf"),
    (lambda: generate(_ring(), (3,), make_grid("karras", 4, EDM()), "euler", seeds=range(2)), "2-dimensional"),
    (lambda: generate(_ring(), (2,), make_grid("karras", 4, EDM()), "nosuch", seeds=range(2)), "nosuch"),
    (lambda: generate(_ring(), (2,), make_grid("karras", 4, EDM()), "ddim:eta=-1", seeds=range(2)), "-1"),
    (lambda: generate(_ring(), (2,), make_grid("karras", 4, EDM()), "euler", seeds=range(0)), "at least one seed"),
]


def _ring():
    from samplerlab.problems import make_problem

    return make_problem("ring").model


@pytest.mark.parametrize("call, message", API_CASES)
def test_the_api_names_the_bad_value(call, message):
    with pytest.raises(ValueError) as err:
        call()
    assert message in str(err.value)


def test_a_spec_is_understood_by_make_solver_too():
    assert make_solver("dpm-solver++:order=3").order == 3


def test_a_spec_is_understood_by_generate_and_sample():
    grid = make_grid("karras", 4, EDM())
    by_spec = generate(_ring(), (2,), grid, "dpm-solver++:order=3", seeds=range(3))
    by_object = generate(_ring(), (2,), grid, make_solver("dpm-solver++", order=3), seeds=range(3))
    assert torch.equal(by_spec.x, by_object.x)


def _gauss():
    from samplerlab.problems import make_problem

    return make_problem("gauss16").model.to(torch.float64)


def test_sample_refuses_an_integer_start_and_a_bad_policy():
    model, grid = _gauss(), make_grid("karras", 4, EDM())
    with pytest.raises(ValueError, match="floating-point"):
        sample(model, torch.zeros(2, 16, dtype=torch.int64), grid, make_solver("euler"))
    with pytest.raises(ValueError, match="nonfinite"):
        sample(model, torch.zeros(2, 16, dtype=torch.float64), grid, make_solver("euler"), nonfinite="maybe")
    bad = make_solver("ddim")
    bad.eta = -1.0  # set after construction: sample() checks again
    with pytest.raises(ValueError, match="eta"):
        sample(model, torch.zeros(2, 16, dtype=torch.float64), grid, bad)


class _NaNAfter:
    """A model that returns NaN from its ``after``-th call on."""

    def __init__(self, model, after):
        self.model, self.after, self.calls = model, after, 0

    def __call__(self, x, sigma, **cond):
        self.calls += 1
        out = self.model(x, sigma, **cond)
        return out * math.nan if self.calls > self.after else out


def test_a_model_that_returns_nan_is_caught_at_its_step():
    model, grid = _gauss(), make_grid("karras", 6, EDM())
    x = SampleNoise(range(3), dtype=torch.float64).randn(16) * 80.0
    with pytest.raises(NonFiniteError, match="step 3 of 6"):
        sample(_NaNAfter(model, 2), x, grid, make_solver("euler"))
    with pytest.warns(RuntimeWarning, match="step 3 of 6"):
        sample(_NaNAfter(model, 2), x, grid, make_solver("euler"), nonfinite="warn")
    assert torch.isnan(sample(_NaNAfter(model, 2), x, grid, make_solver("euler"), nonfinite="ignore").x).all()
    with pytest.raises(NonFiniteError, match="starting state"):
        sample(model, x * math.inf, grid, make_solver("euler"))


# --- properties -------------------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet="abcdeilmnoprstuvw+-:=.0123456789", max_size=24))
def test_any_spec_string_gives_a_solver_or_a_value_error(spec):
    try:
        solver_from_spec(spec)
    except ValueError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(min_value=-(2**70), max_value=2**70), min_size=1, max_size=5))
def test_seeds_are_exactly_the_integers_in_0_to_2_64(seeds):
    valid = all(0 <= s < 2**64 for s in seeds)
    try:
        noise = SampleNoise(seeds)
    except ValueError as err:
        assert not valid and str(next(s for s in seeds if not 0 <= s < 2**64)) in str(err)
    else:
        assert valid and noise.seeds == seeds


@settings(max_examples=100, deadline=None)
@given(
    st.one_of(st.integers(min_value=-5, max_value=300), st.floats(allow_nan=True)),
    st.one_of(st.floats(min_value=-10, max_value=50), st.just(math.nan), st.just(math.inf)),
)
def test_karras_grids_are_valid_or_refused(num_steps, rho):
    try:
        grid = make_grid("karras", num_steps, EDM(), rho=rho)
    except ValueError:
        return
    assert len(grid) == int(num_steps) + 1 and bool(torch.isfinite(grid).all())
    assert bool((grid[:-1] > grid[1:]).all()) and float(grid[-1]) == 0.0
