import json

import pytest

from samplerlab.cli import main


def test_bench_small_run_writes_all_outputs(tmp_path, capsys):
    out = tmp_path / "bench"
    code = main(["bench", "--problems", "ring", "--solvers", "euler,heun,ddim", "--nfe", "1,4", "--samples", "64",
                 "--no-progress", "--out", str(out), "--solver-param", "ddim.eta=0.5"])
    assert code == 0
    text = capsys.readouterr().out
    assert "ring" in text and "heun" in text and "NFE 4" in text
    assert "(3)" in text  # heun cannot use 4 NFE exactly: it used 3, and the table says so
    assert "heun NFE 1" not in text  # 1 NFE fits one Heun step to 0
    data = json.loads((out / "results.json").read_text())
    assert data["config"]["solver_params"] == {"ddim": {"eta": 0.5}}
    rows = {(r["solver"], r["nfe_budget"]): r for r in data["rows"]}
    assert rows[("heun", 4)]["nfe"] == 3 and rows[("euler", 4)]["nfe"] == 4
    assert rows[("ddim", 4)]["rms_ode"] is None  # eta > 0: stochastic, no ODE distance
    assert rows[("euler", 4)]["rms_ode"] > 0
    assert (out / "quality_vs_nfe.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "results.csv").read_text().startswith("problem,solver")
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


@pytest.mark.parametrize("args, message", [
    (["bench", "--solvers", "eulr"], "unknown solver 'eulr'; valid names: "),
    (["bench", "--problems", "moons"], "unknown problem 'moons'; valid names: ring, gmm64"),
    (["bench", "--grid", "cosine"], "unknown grid 'cosine'; valid names: karras"),
    (["bench", "--dtype", "float16"], "unknown dtype 'float16'; valid dtypes: float32, float64"),
    (["bench", "--nfe", "0,5"], "expected integers >= 1"),
    (["bench", "--solver-param", "ddim.etaa=1"], "valid parameters: eta"),
    (["bench", "--solvers", "euler", "--solver-param", "ddim.eta=1"], "solvers not in the run"),
    (["bench", "--solvers", "unipc:order"], "bad solver spec"),
    (["bench", "--tolerances", "0"], "tolerances must be positive"),
])
def test_bad_input_gets_a_clear_error(args, message, capsys):
    assert main(args + ["--no-progress"]) == 2
    assert message in capsys.readouterr().err


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("heun", "karras", "ouve", "gmm64"):
        assert name in out


def test_version_and_threads_after_the_command(capsys):
    import torch

    from samplerlab import __version__

    assert main(["--version"]) == 0 and capsys.readouterr().out.strip() == f"samplerlab {__version__}"
    try:
        assert main(["list", "--threads", "2"]) == 0 and torch.get_num_threads() == 2
        assert main(["--threads", "1", "list"]) == 0 and torch.get_num_threads() == 1
        assert main(["speech", "make-corpus", "--threads", "0"]) == 2
        assert "--threads: expected an integer >= 1, got '0'" in capsys.readouterr().err
    finally:
        torch.set_num_threads(1)


def test_a_closed_pipe_is_not_an_error_and_a_missing_file_is_named_a_file(capsys):
    """``samplerlab list | head -1`` exits 0 without a traceback; a missing ``.pkl`` is "no such checkpoint file"."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "samplerlab.cli", "list"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.readline()
    proc.stdout.close()  # as head does after its line
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and b"Broken pipe" not in err and b"Traceback" not in err
    assert main(["sample", "--checkpoint", "nosuch.pkl", "--no-progress"]) == 2
    assert "nosuch.pkl: no such checkpoint file" in capsys.readouterr().err
