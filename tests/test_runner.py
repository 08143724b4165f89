import json
import textwrap
from pathlib import Path

import pytest

from samplerlab.cli import main
from samplerlab.experiments.config import cells_of, load_experiment
from samplerlab.experiments.runner import run_experiment
from samplerlab.experiments.store import read_results

SMALL = textwrap.dedent("""
    [experiment]
    name = "small"
    problem = "ouve-gmm"
    process = "ouve"
    samples = 24
    metrics = ["snr_db", "rms_posterior_mean"]

    [[study]]
    name = "schedules"
    solvers = ["pc:corrector=annealed-langevin:snr=0.5", "heun"]
    schedules = ["base", "linear"]
    steps = [4, 6]

    [[study]]
    name = "transforms"
    solvers = ["pc:corrector=annealed-langevin:snr=0.5"]
    transforms = ["none", "steepness=1.2", "offset=0.8", "power=2"]
    nfe = [8]
""")


def _write(tmp_path, text=SMALL, name="exp.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_runner_writes_every_cell_and_tables(tmp_path):
    config = load_experiment(_write(tmp_path))
    out = tmp_path / "run"
    summary = run_experiment(config, out, progress=False)
    assert summary["computed"] == summary["cells"] == 2 * 2 * 2 + 4
    lines = (out / "results.jsonl").read_text().splitlines()
    assert len(lines) == 12 and len({json.loads(l)["key"] for l in lines}) == 12
    md = (out / "tables.md").read_text()
    assert "### schedules: snr_db" in md and "**" in md and "*noisy input y*" in md
    assert "steps = 4" in md and "nfe = 8" in md
    csv = (out / "tables.csv").read_text().splitlines()
    assert csv[0].startswith("study,configuration,column,metric,mean,std")
    assert (out / "schedules-metrics.png").exists() and (out / "transforms-schedules.png").exists()
    assert json.loads((out / "config.json").read_text())["name"] == "small"


def test_a_killed_run_resumes_without_recomputing(tmp_path):
    config = load_experiment(_write(tmp_path))
    out = tmp_path / "run"

    class Killed(Exception):
        pass

    def kill_after_five(cell, record):
        if len(read_results(out / "results.jsonl")) == 5:
            raise Killed

    with pytest.raises(Killed):
        run_experiment(config, out, progress=False, on_cell=kill_after_five)
    # a crash in the middle of writing a line leaves a torn line behind
    with open(out / "results.jsonl", "a") as f:
        f.write('{"key": "transforms | torn')
    computed = []
    summary = run_experiment(config, out, progress=False, on_cell=lambda c, r: computed.append(c.key))
    assert summary["computed"] == 7 and summary["reused"] == 5
    finished = read_results(out / "results.jsonl")
    assert set(finished) == {c.key for c in cells_of(config)}
    assert not set(computed) & {k for k in list(finished)[:5]}
    again = run_experiment(config, out, progress=False)
    assert again["computed"] == 0


@pytest.mark.parametrize("change, message", [
    ('name = "small"', None),
    ('problem = "ouve-gmm"\nbogus = 1', "\\[experiment\\]: unknown key 'bogus'"),
    ('schedules = ["base", "linear"]', None),
    ('problem = "ouve-gmm"', None),
])
def test_config_errors(tmp_path, change, message):
    if message is None:
        return
    with pytest.raises(ValueError, match=message):
        load_experiment(_write(tmp_path, SMALL.replace('problem = "ouve-gmm"', change)))


@pytest.mark.parametrize("old, new, message", [
    ('schedules = ["base", "linear"]', 'schedules = ["cosine"]', "unknown schedule shape 'cosine'"),
    ('"power=2"', '"warp=2"', "unknown transform 'warp=2'"),
    ('"offset=0.8"', '"offset=1.5"', "offset in \\(0, 1\\]"),
    ('nfe = [8]', 'nfe = [8]\nsteps = [3]', "exactly one of steps"),
    ('metrics = ["snr_db", "rms_posterior_mean"]', 'metrics = ["pesq"]', "unknown metrics \\['pesq'\\]"),
    ('problem = "ouve-gmm"', 'problem = "speach"', "unknown problem 'speach'"),
])
def test_bad_experiment_files_get_clear_errors(tmp_path, old, new, message):
    with pytest.raises(ValueError, match=message):
        load_experiment(_write(tmp_path, SMALL.replace(old, new)))


def test_bundled_example_has_the_four_published_experiments(tmp_path):
    config = load_experiment(Path(__file__).resolve().parent.parent / "examples" / "sgmse_schedule_study.toml")
    assert [s.name for s in config.studies] == ["1 interchanged schedules", "2 steepness", "3 timestep offset",
                                                 "4 non-uniform steps"]
    assert all(s.steps == [10, 15, 30] for s in config.studies)
    assert config.studies[1].transforms == ["none", "steepness=1.05", "steepness=1.1", "steepness=1.2", "steepness=1.5"]
    config.samples = 16
    summary = run_experiment(config, tmp_path / "example", progress=False)
    assert summary["cells"] == 48


EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.toml")), ids=lambda p: p.name)
def test_every_example_experiment_file_validates(path):
    config = load_experiment(path)
    config.validate()
    assert cells_of(config)


def test_network_study_runs_the_four_experiments_in_the_studys_reading_with_shared_baselines():
    """The four experiments, N = 10 / 15 / 30, every metric; shapes and steepness in the study's (diffusion)
    reading; the baseline computed once per N: 48 cells, 39 distinct."""
    config = load_experiment(EXAMPLES / "sgmse_speech_study_network.toml")
    assert [s.name for s in config.studies] == ["1 interchanged schedules", "2 steepness", "3 timestep offset",
                                                 "4 non-uniform steps"]
    assert all(s.steps == [10, 15, 30] for s in config.studies) and config.files >= 30
    assert {"pesq", "stoi", "warpq", "dnsmos_ovrl", "dnsmos_p808"} <= set(config.metrics)
    assert [s.normalisation for s in config.studies[:2]] == ["diffusion", "diffusion"]
    cells = cells_of(config)
    assert len(cells) == 48 and len({c.work_key for c in cells}) == 39


def test_cli_run_schedules_plot_and_optimise_steps(tmp_path, capsys):
    path = _write(tmp_path)
    assert main(["run", str(path), "--out", str(tmp_path / "r"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "### transforms: rms_posterior_mean" in out and "12 cells computed, 0 reused" in out
    assert main(["schedules", "plot", "--steepness", "1,1.5", "--steps", "10", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["optimise-steps", "--problem", "ring", "--solver", "euler", "--nfe", "4", "--candidates", "12",
                 "--calibration", "16", "--name", "tiny", "--grid-dir", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "tiny.json").read_text())["num_steps"] == 4
    assert main(["bench", "--problems", "ring", "--solvers", "euler", "--nfe", "4", "--samples", "32",
                 "--grid", "saved", "--grid-param", "name=tiny", "--grid-param", f"directory={tmp_path}", "--no-progress"]) == 0
    assert main(["run", str(tmp_path / "missing.toml")]) == 2
    assert "no experiment file" in capsys.readouterr().err


def _shard_worker(rank, world, init_file, exp_path, out_dir):
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        run_experiment(load_experiment(exp_path), out_dir, progress=False)
    finally:
        dist.destroy_process_group()


def test_cells_shard_over_two_gloo_processes(tmp_path):
    import torch.multiprocessing as mp

    exp = _write(tmp_path)
    out = tmp_path / "sharded"
    mp.spawn(_shard_worker, args=(2, str(tmp_path / "rdzv"), str(exp), str(out)), nprocs=2, join=True)
    shards = [read_results(out / f"results.rank{r}.jsonl") for r in (0, 1)]
    assert len(shards[0]) == 6 and len(shards[1]) == 6 and not set(shards[0]) & set(shards[1])
    assert set(read_results(out / "results.jsonl")) == {c.key for c in cells_of(load_experiment(exp))}
    assert "### transforms: snr_db" in (out / "tables.md").read_text()
    # a single-process re-run finds every cell done
    assert run_experiment(load_experiment(exp), out, progress=False)["computed"] == 0


def test_a_process_killed_with_sigkill_resumes(tmp_path):
    """The real thing: run the CLI in a subprocess, SIGKILL it once some cells are on disk, run it again."""
    import os
    import signal
    import subprocess
    import sys
    import time

    slow = SMALL.replace("samples = 24", "samples = 200").replace("steps = [4, 6]", "steps = [20, 40, 60, 80]")
    exp = _write(tmp_path, slow)
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "samplerlab.cli", "run", str(exp), "--out", str(out), "--no-progress"]
    env = {**os.environ, "SAMPLERLAB_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = out / "results.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if results.exists() and len(read_results(results)) >= 2:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait(timeout=60)
    before = read_results(results)
    total = len(cells_of(load_experiment(exp)))
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert 2 <= len(before) < total
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{total - len(before)} cells computed, {len(before)} reused" in rerun.stdout
    after = read_results(results)
    assert set(after) == {c.key for c in cells_of(load_experiment(exp))}
    for key, rec in before.items():  # finished cells were not recomputed
        assert after[key] == rec


def test_a_study_under_the_diffusion_reading_shares_only_the_plain_base(tmp_path):
    text = SMALL + textwrap.dedent("""
        [[study]]
        name = "schedules, diffusion reading"
        solvers = ["pc:corrector=annealed-langevin:snr=0.5", "heun"]
        schedules = ["base", "linear"]
        normalisation = "diffusion"
        steps = [4]
    """)
    config = load_experiment(_write(tmp_path, text))
    cells = {c.key: c for c in cells_of(config)}
    plain = [c for c in cells.values() if c.schedule == "base" and c.steps == 4]
    assert len({c.work_key for c in plain}) == 2  # per solver; the two readings share it
    swapped = [c for c in cells.values() if c.schedule == "linear" and c.steps == 4]
    assert len({c.work_key for c in swapped}) == 4
    assert any(k.endswith("normalisation=diffusion") for k in cells)
    bad = text.replace('normalisation = "diffusion"', 'normalisation = "sgmse"')
    with pytest.raises(ValueError, match=r"study 'schedules, diffusion reading': unknown normalisation 'sgmse'"):
        load_experiment(_write(tmp_path, bad, "bad.toml"))
    other = text.replace('process = "ouve"', 'process = "ve"').replace('problem = "ouve-gmm"', 'problem = "ouve-gmm"')
    with pytest.raises(ValueError, match=r"normalisation 'diffusion' needs process 'ouve'"):
        load_experiment(_write(tmp_path, other, "other.toml"))


def test_a_baseline_computed_in_a_diffusion_study_is_shared_with_the_others_and_kept_on_resume(tmp_path):
    """The plain base computed first under a "diffusion" study (its record's key carries the reading) is
    the baseline of a later "marginal" study too: computed once, recorded for both with shared_from, in both
    studies' tables, and not recomputed when the run is resumed."""
    text = textwrap.dedent("""
        [experiment]
        name = "shared"
        problem = "ouve-gmm"
        process = "ouve"
        samples = 16
        metrics = ["snr_db"]

        [[study]]
        name = "shapes"
        solvers = ["pc:corrector=annealed-langevin:snr=0.5"]
        schedules = ["base", "vp"]
        normalisation = "diffusion"
        steps = [4]

        [[study]]
        name = "offset"
        solvers = ["pc:corrector=annealed-langevin:snr=0.5"]
        transforms = ["none", "offset=0.8"]
        steps = [4]
    """)
    config = load_experiment(_write(tmp_path, text))
    out = tmp_path / "run"
    first = run_experiment(config, out, progress=False)
    assert (first["computed"], first["shared"]) == (3, 1)
    results = read_results(out / "results.jsonl")
    base_offset = [r for r in results.values() if r["study"] == "offset" and r["transform"] == "none"]
    assert len(base_offset) == 1 and base_offset[0]["shared_from"].startswith("shapes | ")
    tables = (out / "tables.md").read_text()
    offset_table = tables[tables.index("### offset"):]
    assert "/ base / none |" in offset_table
    again = run_experiment(config, out, progress=False)
    assert (again["computed"], again["reused"]) == (0, 4)
