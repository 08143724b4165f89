"""Bad files and bad models get a clear error before any work (continues ``test_bad_inputs.py``):
checkpoints that are corrupt, truncated, claim a huge header, lack their config or come from a newer
version; audio that is truncated, non-finite, silent or too short; metrics that cannot run here; a
model whose output has the wrong shape or is more precise than the state; bad mixtures and networks.

Each case asserts the exit status (or exception type), that the message names the bad file or value,
that no traceback is printed and that no output is left behind.
"""

import json
import math
import shutil
import struct

import numpy as np
import pytest
import torch

from samplerlab.analytic import GaussianMixture
from samplerlab.cli import main
from samplerlab.grids import make_grid
from samplerlab.imaging import save_figure
from samplerlab.metrics.speech import pesq_wb
from samplerlab.nets import UNetConfig
from samplerlab.nets.mlp import MLPDenoiserNet
from samplerlab.processes import EDM
from samplerlab.sampling import generate, sample
from samplerlab.solvers import make_solver
from samplerlab.training import TrainConfig, load_checkpoint, train
from samplerlab.training.checkpoint import CheckpointError

sf = pytest.importorskip("soundfile")


def _tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _one_line_error(status, err, expected_status, *texts):
    assert status == expected_status, err
    for text in texts:
        assert text in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err


# --- checkpoints ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory):
    """A real two-step MLP checkpoint (new format: the description inside the safetensors header)."""
    folder = tmp_path_factory.mktemp("ckpt") / "good"
    data = torch.randn(64, 2)
    train(data, TrainConfig(steps=2, batch_size=16, warmup=1, hidden=8, depth=1), folder)
    return folder


def _old_format(folder, meta_text=None, drop_json=False):
    """Rewrite as a samplerlab 0.2 checkpoint: tensors without an embedded description, JSON beside them."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(folder / "checkpoint.safetensors"))
    save_file(tensors, str(folder / "checkpoint.safetensors"))
    if drop_json:
        (folder / "checkpoint.json").unlink()
    elif meta_text is not None:
        (folder / "checkpoint.json").write_bytes(meta_text if isinstance(meta_text, bytes) else meta_text.encode())


def _embedded(folder, change):
    """Rewrite the embedded description with ``change(meta)``."""
    from safetensors.torch import load_file, save_file

    meta = json.loads((folder / "checkpoint.json").read_text())
    change(meta)
    save_file(load_file(str(folder / "checkpoint.safetensors")), str(folder / "checkpoint.safetensors"),
              metadata={"samplerlab": json.dumps(meta)})


def _tensors_bytes(data):
    def corrupt(folder):
        (folder / "checkpoint.safetensors").write_bytes(data(folder))

    return corrupt


def _truncate(folder):
    raw = (folder / "checkpoint.safetensors").read_bytes()
    (folder / "checkpoint.safetensors").write_bytes(raw[: len(raw) // 2])


def _garbage_header(folder):
    (folder / "checkpoint.safetensors").write_bytes(struct.pack("<Q", 16) + b"not json at all!" + b"\0" * 64)


def _drop(name):
    def corrupt(folder):
        (folder / name).unlink()

    return corrupt


def _other_width(meta):
    meta["config"]["hidden"] = 16  # the tensors are for hidden = 8


# (label, corruption of a copy of the good checkpoint, text the message must contain)
CHECKPOINT_CASES = [
    ("random bytes", _tensors_bytes(lambda f: bytes(range(256)) * 4), "checkpoint.safetensors"),
    ("huge header", _tensors_bytes(lambda f: struct.pack("<Q", 2**60) + b"{}"), "header claims"),
    ("empty tensors file", _tensors_bytes(lambda f: b""), "0 bytes"),
    ("truncated tensors", _truncate, "truncated"),
    ("header not JSON", _garbage_header, "header is not JSON"),
    ("no tensors file", _drop("checkpoint.safetensors"), "checkpoint.safetensors is missing"),
    ("old format, no JSON", lambda f: _old_format(f, drop_json=True), "checkpoint.json is missing"),
    ("old format, JSON broken", lambda f: _old_format(f, "{not json"), "not valid JSON"),
    ("old format, JSON a list", lambda f: _old_format(f, "[1, 2]"), "expected a JSON object"),
    ("old format, JSON binary", lambda f: _old_format(f, bytes(range(128, 256))), "not"),
    ("old format, no config", lambda f: _old_format(f, '{"step": 2, "num_classes": 0, "dim": 2}'), "'config'"),
    ("no num_classes", lambda f: _embedded(f, lambda m: m.pop("num_classes")), "'num_classes'"),
    ("no shape", lambda f: _embedded(f, lambda m: (m.pop("shape"), m.pop("dim"))), "example shape"),
    ("step a string", lambda f: _embedded(f, lambda m: m.update(step="2")), "step = '2'"),
    ("newer format", lambda f: _embedded(f, lambda m: m.update(format=99)), "format 99"),
    ("unknown setting", lambda f: _embedded(f, lambda m: m["config"].update(warp=3)), "warp"),
    ("bad setting", lambda f: _embedded(f, lambda m: m["config"].update(steps=0)), "training config"),
    ("tensors of another net", lambda f: _embedded(f, _other_width), "do not fit"),
    ("negative shape", lambda f: _embedded(f, lambda m: m.update(shape=[-2])), "bad example shape"),
]


@pytest.fixture
def broken(good_checkpoint, tmp_path, monkeypatch):
    def make(corrupt):
        folder = tmp_path / "ckpt"
        shutil.copytree(good_checkpoint, folder)
        corrupt(folder)
        monkeypatch.chdir(tmp_path)
        return folder

    return make


def test_the_good_checkpoint_loads(good_checkpoint):
    model, meta = load_checkpoint(good_checkpoint)
    assert meta["step"] == 2 and meta["format"] == 1
    assert model(torch.zeros(3, 2), torch.ones(3)).shape == (3, 2)


def test_a_checkpoint_of_samplerlab_0_2_still_loads(good_checkpoint, tmp_path):
    shutil.copytree(good_checkpoint, tmp_path / "old")
    _old_format(tmp_path / "old")
    _, meta = load_checkpoint(tmp_path / "old")
    assert meta["step"] == 2


@pytest.mark.parametrize("label, corrupt, message", CHECKPOINT_CASES, ids=[c[0] for c in CHECKPOINT_CASES])
def test_load_checkpoint_names_the_bad_file(label, corrupt, message, broken):
    folder = broken(corrupt)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(folder)
    assert message in str(err.value) and "ckpt" in str(err.value)


COMMANDS = [
    ["sample", "--checkpoint", "ckpt", "--out", "s.png", "--no-progress"],
    ["likelihood", "--checkpoint", "ckpt"],
    ["eval", "--checkpoint", "ckpt", "--no-progress"],
    ["enhance", "in.wav", "--model", "ckpt", "--out", "enh", "--no-progress"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=[c[0] for c in COMMANDS])
@pytest.mark.parametrize("label, corrupt, message", CHECKPOINT_CASES[:8], ids=[c[0] for c in CHECKPOINT_CASES[:8]])
def test_every_command_that_reads_a_checkpoint_names_the_bad_file(command, label, corrupt, message, broken, capsys):
    folder = broken(corrupt)
    sf.write(folder.parent / "in.wav", np.random.default_rng(0).normal(0, 0.1, 8000).astype(np.float32), 16000)
    before = _tree(folder.parent)
    status = main(command)
    _one_line_error(status, capsys.readouterr().err, 2, "ckpt", message)
    assert _tree(folder.parent) == before


@pytest.mark.parametrize("label, corrupt, message", CHECKPOINT_CASES[:5], ids=[c[0] for c in CHECKPOINT_CASES[:5]])
def test_training_does_not_resume_from_a_bad_checkpoint(label, corrupt, message, broken, capsys):
    folder = broken(corrupt)
    before = _tree(folder.parent)
    status = main(["train", "--data", "moons", "--steps", "4", "--hidden", "8", "--depth", "1", "--out", "ckpt",
                   "--no-progress"])
    _one_line_error(status, capsys.readouterr().err, 2, "ckpt", message)
    assert _tree(folder.parent) == before  # the bad checkpoint is left as it was, nothing added


# --- audio ------------------------------------------------------------------------------------------------

RATE = 16000


def _wav(samples, subtype="PCM_16"):
    def write(path):
        sf.write(path, np.asarray(samples, dtype=np.float32), RATE, subtype=subtype)

    return write


def _truncated_wav(path):
    sf.write(path, np.random.default_rng(1).normal(0, 0.1, RATE).astype(np.float32), RATE)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 4])


def _bytes(data):
    def write(path):
        path.write_bytes(data)

    return write


NOISE = np.random.default_rng(2).normal(0, 0.1, RATE)
AUDIO_CASES = [
    ("10 samples", _wav(NOISE[:10]), "10 samples"),
    ("300 samples", _wav(NOISE[:300]), "300 samples"),
    ("truncated", _truncated_wav, "truncated"),
    ("all NaN", _wav(np.full(RATE, np.nan), "FLOAT"), "NaN or infinite"),
    ("one inf", _wav(np.where(np.arange(RATE) == 5, np.inf, NOISE), "FLOAT"), "1 of 16000 samples"),
    ("random bytes", _bytes(bytes(range(256)) * 8), "not a readable audio file"),
    ("empty file", _bytes(b""), "not a readable audio file"),
]


@pytest.mark.parametrize("label, write, message", AUDIO_CASES, ids=[c[0] for c in AUDIO_CASES])
def test_enhance_refuses_a_bad_recording_before_any_work(label, write, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "noisy").mkdir()
    _wav(NOISE)(tmp_path / "noisy" / "a_good.wav")  # a good file first: nothing may be enhanced before the check
    write(tmp_path / "noisy" / "b_bad.wav")
    before = _tree(tmp_path)
    status = main(["enhance", "noisy", "--out", "enh", "--steps", "2", "--no-progress"])
    _one_line_error(status, capsys.readouterr().err, 2, "b_bad.wav", message)
    assert _tree(tmp_path) == before


def test_enhance_refuses_a_silent_recording(tmp_path, capsys):
    _wav(np.zeros(RATE))(tmp_path / "silent.wav")
    status = main(["enhance", str(tmp_path / "silent.wav"), "--out", str(tmp_path / "enh"), "--no-progress"])
    _one_line_error(status, capsys.readouterr().err, 2, "silent.wav", "silent")
    assert not (tmp_path / "enh").exists()


@pytest.fixture
def scored(tmp_path, monkeypatch):
    """clean/ and enhanced/ folders with one good pair; returns a function adding a bad enhanced file."""
    monkeypatch.chdir(tmp_path)
    for name in ("clean", "enhanced"):
        (tmp_path / name).mkdir()
        _wav(NOISE)(tmp_path / name / "a.wav")

    def add(write, clean=None):
        write(tmp_path / "enhanced" / "b.wav")
        (clean or _wav(NOISE))(tmp_path / "clean" / "b.wav")
        return tmp_path

    return add


@pytest.mark.parametrize("label, write, message", AUDIO_CASES, ids=[c[0] for c in AUDIO_CASES])
def test_speech_eval_refuses_a_bad_recording_before_scoring(label, write, message, scored, capsys):
    root = scored(write)
    status = main(["speech", "eval", "--clean", "clean", "--enhanced", "enhanced", "--metrics", "si_sdr",
                   "--out", "scores.json", "--no-progress"])
    _one_line_error(status, capsys.readouterr().err, 2, "b.wav", message)
    assert not (root / "scores.json").exists()


def test_speech_eval_refuses_a_file_too_short_for_pesq(scored, capsys):
    pytest.importorskip("pesq")
    scored(_wav(NOISE[:2000]), clean=_wav(NOISE[:2000]))
    status = main(["speech", "eval", "--clean", "clean", "--enhanced", "enhanced", "--metrics", "pesq", "--no-progress"])
    _one_line_error(status, capsys.readouterr().err, 2, "b.wav", "2000 samples", "4000")


@pytest.mark.parametrize(
    "metrics, status, message",
    [("dnsmos_ovrl", 1, "--dnsmos DIR"), ("dnsmos_p808", 1, "--dnsmos DIR"), ("nosuch", 2, "nosuch"),
     ("si_sdr,pesqq", 2, "pesqq")],
)
def test_speech_eval_refuses_metrics_that_cannot_run_before_scoring(metrics, status, message, scored, capsys,
                                                                   monkeypatch):
    monkeypatch.setattr("samplerlab.metrics.dnsmos.bundled_model_dir", lambda: None)  # as without speechmos
    scored(_wav(NOISE))
    code = main(["speech", "eval", "--clean", "clean", "--enhanced", "enhanced", "--metrics", metrics, "--no-progress"])
    _one_line_error(code, capsys.readouterr().err, status, message)


def test_pesq_refuses_a_short_or_silent_signal():
    pytest.importorskip("pesq")
    with pytest.raises(ValueError, match="at least 0.25 s"):
        pesq_wb(NOISE[:1000], NOISE[:1000])
    with pytest.raises(ValueError, match="PESQ: .*utterance"):
        pesq_wb(np.zeros(RATE), np.zeros(RATE))


def test_make_corpus_without_espeak_ng_says_what_to_install(tmp_path, monkeypatch, capsys):
    import samplerlab.speech.corpus as corpus

    monkeypatch.setattr(corpus.shutil, "which", lambda name: None)
    status = main(["speech", "make-corpus", "--out", str(tmp_path / "corpus"), "--no-progress"])
    _one_line_error(status, capsys.readouterr().err, 1, "espeak-ng is not installed", "apt-get install espeak-ng")
    assert not (tmp_path / "corpus").exists()


@pytest.mark.parametrize(
    "args, message",
    [(["--snr-max", "nan"], "'nan'"), (["--snr-max", "inf"], "'inf'"), (["--train", "-1"], "'-1'"),
     (["--noise", "purple"], "purple"), (["--snr-min", "30", "--snr-max", "10"], "snr_min <= snr_max finite"),
     (["--seed", "-2"], "'-2'")],
)
def test_make_corpus_checks_its_settings(args, message, tmp_path, capsys):
    status = main(["speech", "make-corpus", "--out", str(tmp_path / "c"), *args, "--no-progress"])
    _one_line_error(status, capsys.readouterr().err, 2, message)
    assert not (tmp_path / "c").exists()


# --- models -----------------------------------------------------------------------------------------------

GAUSS = GaussianMixture.gaussian(torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64))
GRID = make_grid("karras", 3, EDM())
X64 = torch.ones(2, 4, dtype=torch.float64)

MODEL_CASES = [
    ("broadcasting output", lambda x, s: x[:1], "shape (1, 4), torch.float64 for an input of shape (2, 4)"),
    ("flattened output", lambda x, s: x.reshape(-1), "shape (8,)"),
    ("an int tensor", lambda x, s: x.long(), "torch.int64"),
    ("a number", lambda x, s: 0.0, "float"),
    ("a numpy array", lambda x, s: x.numpy(), "ndarray"),
]


@pytest.mark.parametrize("label, model, message", MODEL_CASES, ids=[c[0] for c in MODEL_CASES])
def test_a_model_output_of_the_wrong_kind_is_refused(label, model, message):
    with pytest.raises(ValueError) as err:
        sample(model, X64, GRID, make_solver("euler"))
    assert message in str(err.value)


def test_a_float64_model_is_not_run_in_float32():
    with pytest.raises(ValueError, match="computes in torch.float64 but the state is torch.float32"):
        sample(GAUSS, X64.float(), GRID, make_solver("euler"))
    assert generate(GAUSS, (4,), GRID, make_solver("euler"), [0, 1]).x.dtype == torch.float64  # its own dtype
    assert sample(GAUSS.to(torch.float32), X64.float(), GRID, make_solver("euler")).x.dtype == torch.float32
    net = MLPDenoiserNet(4, 8, 1).double()
    with pytest.raises(ValueError, match="float64"):
        sample(_Wrapped(net), X64.float(), GRID, make_solver("euler"))


class _Wrapped:
    """A denoiser around a network (``net``), as the EDM preconditioner is."""

    def __init__(self, net):
        self.net = net

    def __call__(self, x, sigma):
        return x


ONES = torch.ones(2, 2, dtype=torch.float64)
API_CASES = [
    (lambda: GaussianMixture(torch.zeros(2), ONES, ONES), "sum to 0"),
    (lambda: GaussianMixture(torch.tensor([1.0, math.nan]), ONES, ONES), "nan"),
    (lambda: GaussianMixture(torch.tensor([1.0, -1.0]), ONES, ONES), "-1.0"),
    (lambda: GaussianMixture(torch.tensor([1.0, math.inf]), ONES, ONES), "inf"),
    (lambda: GaussianMixture(torch.ones(2), ONES * math.nan, ONES), "means must be finite"),
    (lambda: GaussianMixture(torch.ones(2), ONES, ONES * math.inf), "covs must be finite"),
    (lambda: GaussianMixture(torch.ones(2), ONES, -ONES), "positive"),
    (lambda: GaussianMixture(torch.ones(3), ONES, ONES), "K=2"),
    (lambda: GaussianMixture(torch.ones(1), torch.zeros(2), ONES), "(K, d)"),
    (lambda: MLPDenoiserNet(2, 0, 2), "hidden=0"),
    (lambda: MLPDenoiserNet(2, 8, -1), "depth=-1"),
    (lambda: MLPDenoiserNet(0, 8, 1), "dim=0"),
    (lambda: UNetConfig(channels=0), "0"),
    (lambda: UNetConfig(channel_mult=(1, 0)), "(1, 0)"),
    (lambda: UNetConfig(channel_mult=()), "()"),
    (lambda: UNetConfig(num_blocks=0), "0"),
    (lambda: UNetConfig(dropout=1.5), "1.5"),
    (lambda: UNetConfig(embedding="sinusoid"), "sinusoid"),
    (lambda: TrainConfig(steps=0).validate(), "0"),
    (lambda: TrainConfig(ema_decay=1.0).validate(), "1.0"),
    (lambda: TrainConfig(net="transformer").validate(), "transformer"),
]


@pytest.mark.parametrize("call, message", API_CASES)
def test_bad_models_and_networks_are_refused(call, message):
    with pytest.raises(ValueError) as err:
        call()
    assert message in str(err.value)


@pytest.mark.parametrize("name, fmt", [("f.png", b"\x89PNG"), ("f.pdf", b"%PDF"), ("f.svg", b"<?xml")])
def test_a_figure_is_written_in_the_format_its_name_says(name, fmt, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure()
    save_figure(fig, tmp_path / name)
    plt.close(fig)
    assert (tmp_path / name).read_bytes().startswith(fmt)
    with pytest.raises(ValueError, match="f.txt"):
        save_figure(fig, tmp_path / "f.txt")


@pytest.mark.parametrize("args, message", [(["--steps", "0"], "'0'"), (["--steps", "-3"], "'-3'"),
                                           (["--power", "0"], "'0'"), (["--offset", "nan"], "'nan'")])
def test_schedules_plot_checks_its_numbers(args, message, tmp_path, capsys):
    status = main(["schedules", "plot", "--out", str(tmp_path / "s.png"), *args])
    _one_line_error(status, capsys.readouterr().err, 2, message)
    assert not (tmp_path / "s.png").exists()


def test_a_prior_file_that_is_not_one_is_named(tmp_path, capsys):
    _wav(NOISE)(tmp_path / "in.wav")
    (tmp_path / "prior.npz").write_bytes(bytes(range(256)))
    status = main(["enhance", str(tmp_path / "in.wav"), "--prior", str(tmp_path / "prior.npz"), "--prior-mode",
                   "stationary", "--out", str(tmp_path / "enh"), "--no-progress"])
    _one_line_error(status, capsys.readouterr().err, 2, "prior.npz: not a Gaussian prior file")
    assert not (tmp_path / "enh").exists()


def test_a_corrupt_feature_cache_is_made_again(tmp_path):
    from samplerlab.metrics.features import reference_statistics

    images = torch.linspace(0, 1, 2 * 3 * 4 * 4).reshape(2, 3, 4, 4)

    def extractor(x):
        return x.reshape(len(x), -1)[:, :3]

    first = reference_statistics(extractor, images, images, tag="t", cache=tmp_path)
    (entry,) = tmp_path.glob("reference-*.npz")
    entry.write_bytes(b"PK\x03\x04 cut short")  # a truncated cache file
    with pytest.warns(RuntimeWarning, match="unreadable cache entry"):
        again = reference_statistics(extractor, images, images, tag="t", cache=tmp_path)
    assert torch.equal(first.mu, again.mu)


def test_enhance_takes_any_grid_and_names_a_bad_one(tmp_path, capsys):
    """--grid picks the levels (the count is the solver's NFE with the final step); an unknown grid is named
    with the valid ones before any file is written."""
    _wav(NOISE)(tmp_path / "in.wav")
    status = main(["enhance", str(tmp_path / "in.wav"), "--solver", "euler", "--steps", "3", "--grid", "logsnr",
                   "--out", str(tmp_path / "enh"), "--no-progress"])
    assert status == 0
    out = capsys.readouterr().out
    assert "3 steps on the logsnr grid (3 NFE per file)" in out
    assert json.loads((tmp_path / "enh" / "enhance.json").read_text())["grid"] == "logsnr"
    status = main(["enhance", str(tmp_path / "in.wav"), "--solver", "euler", "--steps", "3", "--grid", "nope",
                   "--out", str(tmp_path / "enh2"), "--no-progress"])
    err = capsys.readouterr().err
    assert status == 2 and "nope" in err and "logsnr" in err
    assert not (tmp_path / "enh2").exists()
