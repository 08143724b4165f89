"""A run killed with SIGKILL (no cleanup runs) resumes with nothing lost and ends exactly like a run that was
never interrupted, leaving no half-written or temporary file: ``run``, ``train``, ``speech make-corpus``
and ``bench``.

Each test starts the real console script, kills it as soon as it has committed its first result (a
results line, a checkpoint, a corpus file, a bench cell) — so the kill lands mid-run, often mid-write —
then re-runs the command in-process and compares with an uninterrupted run.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from samplerlab.cli import main
from samplerlab.training.checkpoint import read_checkpoint


def _kill_when(args, cwd: Path, ready, timeout: float = 120.0) -> bool:
    """Start ``samplerlab ARGS``; SIGKILL it once ``ready()`` holds. False if it finished first."""
    env = {**os.environ, "SAMPLERLAB_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "samplerlab.cli", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if ready():
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return True
            time.sleep(0.005)
        assert proc.poll() is not None, "the command did not reach its first result in time"
        assert proc.returncode == 0, proc.stderr.read().decode()
        return False
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def _cli(args, cwd: Path) -> None:
    """``samplerlab ARGS`` to the end in a fresh process (training is compared process to process: the
    float reductions of one process can round differently from another's, e.g. the test runner's)."""
    env = {**os.environ, "SAMPLERLAB_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "samplerlab.cli", *args], cwd=cwd, env=env, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()


def _temporaries(root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and ".tmp" in p.name]


def _lines(path: Path) -> int:
    return len(path.read_bytes().splitlines()) if path.is_file() else 0


RUN_TOML = """
[experiment]
name = "kill"
problem = "ouve-gmm"
process = "ouve"
samples = 64
[[study]]
name = "s"
solvers = ["euler", "heun", "dpm-solver++", "pc"]
schedules = ["base", "vp"]
steps = [3, 6, 10]
"""


def test_a_killed_run_resumes_to_the_uninterrupted_results(tmp_path):
    (tmp_path / "exp.toml").write_text(RUN_TOML)
    assert main(["run", str(tmp_path / "exp.toml"), "--out", str(tmp_path / "straight"), "--no-progress"]) == 0
    killed = tmp_path / "killed"
    assert _kill_when(
        ["run", "exp.toml", "--out", "killed", "--no-progress"], tmp_path, lambda: _lines(killed / "results.jsonl") >= 1
    )
    assert 1 <= _lines(killed / "results.jsonl") < 24  # killed mid-run
    assert main(["run", str(tmp_path / "exp.toml"), "--out", str(killed), "--no-progress"]) == 0

    def records(folder):
        out = {}
        for line in (folder / "results.jsonl").read_text().splitlines():
            rec = json.loads(line)
            rec.pop("seconds", None), rec.pop("rtf", None)
            assert rec["key"] not in out, "a cell was recorded twice"
            out[rec["key"]] = rec
        return out

    assert records(killed) == records(tmp_path / "straight")
    assert (killed / "tables.md").is_file() and (killed / "tables.csv").is_file()
    assert _temporaries(killed) == []


def test_killed_training_resumes_exactly(tmp_path):
    args = ["train", "--data", "moons", "--samples", "512", "--steps", "200", "--batch-size", "64"]
    args += ["--hidden", "32", "--depth", "2", "--checkpoint-every", "20", "--no-progress"]
    _cli([*args, "--out", "straight"], tmp_path)
    killed = tmp_path / "killed"
    assert _kill_when([*args, "--out", "killed"], tmp_path, lambda: (killed / "checkpoint.safetensors").exists())
    assert read_checkpoint(killed, tensors=False)[0]["step"] < 200  # killed mid-run (the JSON copy may lag)
    _cli([*args, "--out", "killed"], tmp_path)

    from safetensors.torch import load_file

    a, b = load_file(str(tmp_path / "straight" / "checkpoint.safetensors")), load_file(str(killed / "checkpoint.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    meta_a = json.loads((tmp_path / "straight" / "checkpoint.json").read_text())
    meta_b = json.loads((killed / "checkpoint.json").read_text())
    assert meta_a["losses"] == meta_b["losses"] and meta_b["step"] == 200
    steps = [json.loads(line)["step"] for line in (killed / "log.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)), "a log line was repeated or lost"
    assert _temporaries(killed) == []


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
def test_a_killed_corpus_resumes_to_the_same_files(tmp_path):
    args = ["speech", "make-corpus", "--train", "5", "--valid", "0", "--test", "2", "--noise", "white,pink", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "straight")]) == 0
    killed = tmp_path / "killed"
    assert _kill_when([*args, "--out", "killed"], tmp_path, lambda: any((killed / "train" / "noisy").glob("*.wav")))
    assert len(list(killed.rglob("*.wav"))) < 14  # killed mid-run
    assert main([*args, "--out", str(killed)]) == 0

    def tree(root):
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    assert tree(killed) == tree(tmp_path / "straight")  # every file, byte for byte; no temporaries


def test_a_killed_bench_resumes_to_the_same_table(tmp_path):
    args = ["bench", "--problems", "ring", "--solvers", "euler,ddim,heun,dpm-solver++,dopri5"]
    args += ["--nfe", "5,10,20", "--samples", "256", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "straight")]) == 0
    killed = tmp_path / "killed"
    assert _kill_when([*args, "--out", "killed"], tmp_path, lambda: _lines(killed / ".partial" / "cells.jsonl") >= 1)
    assert 1 <= _lines(killed / ".partial" / "cells.jsonl") < 15  # killed mid-run; what was finished is kept
    assert main([*args, "--out", str(killed)]) == 0

    def rows(folder):
        out = json.loads((folder / "results.json").read_text())["rows"]
        for row in out:
            row.pop("wall_seconds"), row.pop("overhead_share")
        return out

    assert rows(killed) == rows(tmp_path / "straight")
    assert not (killed / ".partial").exists() and _temporaries(killed) == []


def test_a_stale_checkpoint_description_does_not_matter(tmp_path):
    """A kill between the tensors' rename and the JSON copy's: the tensors file carries its own description."""
    from samplerlab.data import make_toy
    from samplerlab.training import TrainConfig, train

    data = make_toy("moons", 256, seed=0).float()
    cfg = TrainConfig(steps=30, batch_size=32, warmup=5, checkpoint_every=1000, hidden=16, depth=1)
    straight, _ = train(data, cfg, tmp_path / "a")
    train(data, cfg, tmp_path / "b", stop_after=10)
    stale = (tmp_path / "b" / "checkpoint.json").read_text()
    train(data, cfg, tmp_path / "b", stop_after=10)  # now at step 20 ...
    (tmp_path / "b" / "checkpoint.json").write_text(stale)  # ... but the JSON copy says 10
    resumed, meta = train(data, cfg, tmp_path / "b")
    assert meta["step"] == 30 and len(meta["losses"]) == 30
    for p, q in zip(straight.net.state_dict().values(), resumed.net.state_dict().values()):
        assert torch.equal(p, q)
