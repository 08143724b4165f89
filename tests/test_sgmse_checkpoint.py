"""SGMSE+ checkpoints read safely: files written the way SGMSE+'s Lightning training writes them (a dict with
state_dict, the torch_ema state and hyperparameters that reference the data-module class, in an AttributeDict
in older files) load in plain torch with nothing executed; a crafted pickle is refused by name and runs
nothing; the EMA list gets its names."""

import collections
import importlib.util
import math
import os
import pickle
import sys
import types
import unittest.mock
import zipfile

import pytest
import torch

from samplerlab.adapters.sgmse import read_sgmse_checkpoint
from samplerlab.io import CheckpointError


class _Upstream:
    """Stand-ins for the upstream classes while writing, placed under their real module names, then removed:
    reading must not need them."""

    def __enter__(self):
        class SpecsDataModule:
            pass

        class AttributeDict(dict):
            pass

        class Thing:
            pass

        self.names = {
            "sgmse": None, "sgmse.data_module": {"SpecsDataModule": SpecsDataModule, "Thing": Thing},
            "pytorch_lightning": None, "pytorch_lightning.utilities": None,
            "pytorch_lightning.utilities.parsing": {"AttributeDict": AttributeDict},
        }
        for name, members in self.names.items():
            module = types.ModuleType(name)
            for attr, cls in (members or {}).items():
                cls.__module__, cls.__qualname__ = name, attr
                setattr(module, attr, cls)
            sys.modules[name] = module
        return types.SimpleNamespace(SpecsDataModule=SpecsDataModule, AttributeDict=AttributeDict, Thing=Thing)

    def __exit__(self, *exc):
        for name in self.names:
            sys.modules.pop(name, None)


def _network():
    """A small module tree with a buffer between parameters and a non-trainable parameter (as NCSN++'s
    Fourier features)."""
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 4))
    net.register_parameter("W", torch.nn.Parameter(torch.randn(4), requires_grad=False))
    return net


def _write(path, attribute_dict=False, ema=True):
    torch.manual_seed(0)
    net = _network()
    state = collections.OrderedDict((f"dnn.{k}", v) for k, v in net.state_dict().items())
    state["pesq_loss.weight"] = torch.ones(2)
    with _Upstream() as up:
        hyper = dict(backbone="ncsnpp", sde="ouve", theta=1.5, sigma_min=0.05, sigma_max=0.5, N=30,
                     data_module_cls=up.SpecsDataModule)
        if attribute_dict:  # older files: Lightning's AttributeDict
            hyper = up.AttributeDict(hyper)
        checkpoint = {"state_dict": state, "hyper_parameters": hyper, "epoch": 7, "global_step": 1234,
                      "pytorch-lightning_version": "1.9.5"}
        if ema:
            shadow = [p.detach() + 0.5 for p in net.parameters()]  # the EMA differs from the live weights
            checkpoint["ema"] = {"decay": 0.999, "num_updates": 1234, "shadow_params": shadow, "collected_params": None}
        torch.save(checkpoint, path)
    return net


@pytest.mark.parametrize("attribute_dict", [False, True])
def test_an_upstream_checkpoint_reads_as_plain_data(tmp_path, attribute_dict):
    net = _write(tmp_path / "m.ckpt", attribute_dict)
    ck = read_sgmse_checkpoint(tmp_path / "m.ckpt")
    assert ck.backbone == "ncsnpp" and ck.sde == "ouve" and ck.hyperparameters["theta"] == 1.5
    assert ck.hyperparameters["data_module_cls"] == "sgmse.data_module.SpecsDataModule"
    assert type(ck.hyperparameters) is dict and ck.extra == {"epoch": 7, "global_step": 1234,
                                                            "pytorch-lightning_version": "1.9.5"}
    live = net.state_dict()
    assert set(ck.weights) == set(live) and "pesq_loss.weight" not in ck.weights
    named = dict(net.named_parameters())
    assert set(ck.ema) == set(named)  # the buffers (BatchNorm's running statistics) are not in the EMA
    for name, p in named.items():
        assert torch.equal(ck.ema[name], p.detach() + 0.5)
    weights = ck.network_weights()
    assert torch.equal(weights["W"], named["W"].detach() + 0.5)  # the non-trainable parameter is averaged too
    assert torch.equal(weights["1.running_mean"], live["1.running_mean"])
    assert torch.equal(ck.network_weights(use_ema=False)["0.weight"], live["0.weight"])


def test_a_checkpoint_without_ema_uses_the_trained_weights(tmp_path):
    _write(tmp_path / "m.ckpt", ema=False)
    ck = read_sgmse_checkpoint(tmp_path / "m.ckpt")
    assert ck.ema is None and ck.network_weights() == ck.weights


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    exploit = _Exploit()
    exploit.marker = marker
    torch.save({"state_dict": {}, "hyper_parameters": {"backbone": exploit}}, tmp_path / "evil.ckpt")
    with pytest.raises(CheckpointError, match=r"evil\.ckpt: refers to (posix|os|nt)\.system"):
        read_sgmse_checkpoint(tmp_path / "evil.ckpt")
    assert not marker.exists()


def test_an_unexpected_class_is_named(tmp_path):
    with _Upstream() as up:
        torch.save({"state_dict": {}, "hyper_parameters": {"backbone": "ncsnpp", "x": up.Thing}}, tmp_path / "t.ckpt")
    with pytest.raises(CheckpointError, match=r"t\.ckpt: refers to sgmse\.data_module\.Thing.*nothing was executed"):
        read_sgmse_checkpoint(tmp_path / "t.ckpt")


@pytest.mark.parametrize("label, make, message", [
    ("random bytes", lambda p: p.write_bytes(bytes(range(256)) * 4), "not a torch checkpoint"),
    ("empty", lambda p: p.write_bytes(b""), "not a torch checkpoint"),
    ("a plain pickle", lambda p: p.write_bytes(pickle.dumps({"a": 1})), "not a torch checkpoint"),
    ("missing", lambda p: None, "no such checkpoint file"),
    ("a tensor", lambda p: torch.save(torch.ones(2), p), "no 'state_dict'"),
    ("no hyperparameters", lambda p: torch.save({"state_dict": {"dnn.a": torch.ones(1)}}, p), "hyper_parameters"),
    ("no network", lambda p: torch.save({"state_dict": {"x": torch.ones(1)}, "hyper_parameters": {"backbone": "n"}}, p),
     "no 'dnn.' tensors"),
    ("EMA of another network", lambda p: torch.save({"state_dict": {"dnn.a": torch.ones(3)}, "hyper_parameters":
                                                     {"backbone": "n"}, "ema": {"shadow_params": [torch.ones(2)]}}, p),
     "EMA belongs to another network"),
])
def test_files_that_are_not_sgmse_checkpoints_are_named(tmp_path, label, make, message):
    path = tmp_path / "bad.ckpt"
    make(path)
    with pytest.raises(CheckpointError, match=message) as err:
        read_sgmse_checkpoint(path)
    assert "bad.ckpt" in str(err.value)


def test_a_truncated_checkpoint_is_named(tmp_path):
    _write(tmp_path / "m.ckpt")
    raw = (tmp_path / "m.ckpt").read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="cut.ckpt"):
        read_sgmse_checkpoint(tmp_path / "cut.ckpt")
    assert zipfile.is_zipfile(tmp_path / "m.ckpt")


# --- NCSN++ against the upstream module (PyPI sgmse==0.1.2, installed without its dependencies) ------------

# CUDA hidden while importing: with a GPU, the package compiles its CUDA kernels at import (its CPU path is pure torch)
with unittest.mock.patch("torch.cuda.is_available", return_value=False):
    upstream = pytest.importorskip(
        "sgmse.backbones.ncsnpp", reason="the reference package is missing: pip install --no-deps sgmse==0.1.2"
    )


def _upstream_class(backbone):
    import sgmse.backbones as backbones

    return {"ncsnpp": backbones.NCSNpp, "ncsnpp_48k": backbones.NCSNpp_48k, "ncsnpp_v2": backbones.NCSNpp_v2}[backbone]


def _perturbed_upstream(backbone="ncsnpp", **cfg):
    torch.manual_seed(0)
    net = _upstream_class(backbone)(**cfg).eval()
    with torch.no_grad():
        for p in net.parameters():  # zero-initialised layers (biases, the last convolutions) would hide errors
            p.add_(torch.randn_like(p) * 0.05)
    return net


SMALL_NET = dict(nf=16, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(16,), image_size=32)


@pytest.mark.parametrize("backbone, cfg, shape", [
    ("ncsnpp", SMALL_NET, (2, 2, 32, 16)),
    ("ncsnpp", dict(nf=8, num_res_blocks=2, attn_resolutions=(16,), image_size=256), (1, 2, 256, 64)),  # 7 levels
    ("ncsnpp", dict(nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), image_size=8, centered=False),
     (2, 2, 8, 8)),
    ("ncsnpp_48k", dict(nf=8, ch_mult=(1, 2, 2), num_res_blocks=1, image_size=32), (2, 2, 32, 16)),
    ("ncsnpp_48k", dict(nf=8, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(16,), image_size=32),
     (1, 2, 32, 8)),
    ("ncsnpp_v2", SMALL_NET, (2, 2, 32, 16)),
])
def test_ncsnpp_matches_the_upstream_module(backbone, cfg, shape):
    from samplerlab.nets.ncsnpp import NCSNpp, NCSNppConfig, NCSNppV2

    reference = _perturbed_upstream(backbone, **cfg)  # float32: upstream's FIR kernel is float32 whatever the input
    settings = NCSNppConfig.for_backbone(backbone, **cfg)
    mine = (NCSNppV2 if backbone == "ncsnpp_v2" else NCSNpp)(settings).eval()
    mine.load_state_dict(reference.state_dict(), strict=True)
    g = torch.Generator().manual_seed(1)
    x = torch.complex(torch.randn(*shape, generator=g), torch.randn(*shape, generator=g))
    t = torch.rand(shape[0], generator=g) * 0.5 + 0.05
    with torch.no_grad():
        if backbone == "ncsnpp_v2":
            want, got = reference(x[:, :1], x[:, 1:], t), mine(x[:, :1], x[:, 1:], t)
        else:
            want, got = reference(x, t), mine(x, t)
    assert got.shape == want.shape == (shape[0], 1, *shape[2:])
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))


@pytest.mark.parametrize("backbone", ["ncsnpp", "ncsnpp_48k", "ncsnpp_v2"])
def test_an_upstream_checkpoint_builds_the_same_network_with_its_ema_weights(tmp_path, backbone):
    from samplerlab.adapters.sgmse import build_sgmse_network

    cfg = dict(nf=16, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(16,), image_size=32)
    reference = _perturbed_upstream(backbone, **cfg)
    state = collections.OrderedDict((f"dnn.{k}", v) for k, v in reference.state_dict().items())
    shadow = [p.detach() * 0.9 + 0.01 for p in reference.parameters()]  # an EMA unlike the live weights
    with _Upstream() as up:
        hyper = up.AttributeDict(backbone=backbone, sde="ouve", centered=True, ch_mult=list(cfg["ch_mult"]), num_res_blocks=1,
                                 attn_resolutions=[16], nf=16, image_size=32, data_module_cls=up.SpecsDataModule)
        torch.save({"state_dict": state, "hyper_parameters": hyper,
                    "ema": {"decay": 0.999, "num_updates": 10, "shadow_params": shadow}}, tmp_path / "m.ckpt")
    ck = read_sgmse_checkpoint(tmp_path / "m.ckpt")
    x = torch.randn(2, 2, 32, 16, dtype=torch.complex64)
    t = torch.tensor([0.1, 0.4])
    with torch.no_grad():
        for p, s in zip(reference.parameters(), shadow):
            p.copy_(s)
        net = build_sgmse_network(ck)
        args = (x[:, :1], x[:, 1:], t) if backbone == "ncsnpp_v2" else (x, t)
        want, got = reference(*args), net(*args)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))
    with pytest.raises(CheckpointError, match="do not fit the NCSN\\+\\+"):
        build_sgmse_network(read_sgmse_checkpoint(tmp_path / "m.ckpt").__class__(
            ck.path, {**ck.hyperparameters, "nf": 32}, ck.weights, ck.ema))


# --- the sqrt(2) convention, checked against an exact model -------------------------------------------------


class _PerfectSGMSENet(torch.nn.Module):
    """What a perfectly trained SGMSE+ score network outputs for an exactly known residual distribution,
    written in SGMSE+'s own terms: its OUVE (sigma_min 0.05, sigma_max 0.5, complex noise of std(t)), the
    score S = -(x - E[mean | x]) / std^2 that its loss |std S + z|^2 is minimised by, and the network's sign
    (the model's score is -net)."""

    def __init__(self, exact, y_shape):
        super().__init__()
        self.exact, self.shape = exact, y_shape
        self.dummy = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))

    @staticmethod
    def std(t, theta=1.5, smin=0.05, smax=0.5):
        logsig = math.log(smax / smin)
        return torch.sqrt(smin**2 * torch.exp(-2 * theta * t) * (torch.exp(2 * (theta + logsig) * t) - 1) * logsig
                          / (theta + logsig))

    def forward(self, xy, t):
        x, y = xy[:, :1], xy[:, 1:2]
        s = torch.exp(-1.5 * t).reshape(-1, 1, 1, 1)
        std = self.std(t).reshape(-1, 1, 1, 1)
        # the exact posterior mean of the residual's clean part, from the (complex) noise of variance std^2
        u = torch.cat([((x - y) / s).real, ((x - y) / s).imag], dim=1).reshape(x.shape[0], -1)
        level = std.reshape(-1) / (math.sqrt(2) * s.reshape(-1))  # per real part: std / sqrt(2), in u0 units
        y_real = torch.cat([y.real, y.imag], dim=1).reshape(x.shape[0], -1)
        d = self.exact(u, level, y=y_real).reshape(x.shape[0], 2, *x.shape[2:])
        mean_hat = y + s * torch.complex(d[:, :1], d[:, 1:2])
        score = -(x - mean_hat) / std**2
        return -score


def test_the_sqrt2_convention_recovers_the_exact_denoiser():
    """A perfect SGMSE+ network wrapped by samplerlab gives exactly the exact model's D at every level: with
    the noise per complex number and its score at half the real gradient, D = u + 2 s sigma^2 S."""
    from samplerlab.adapters.sgmse import SGMSEScore, SGMSEScoreDenoiser, sgmse_process
    from samplerlab.problems import make_conditional_problem

    joint = make_conditional_problem("ouve-gmm").joint  # 16-D: a (2, 4, 2) spectrogram of Re and Im
    exact = joint.residual_denoiser()
    x0, y = joint.sample(6, torch.Generator().manual_seed(0))
    process = sgmse_process({"theta": 1.5, "sigma_min": 0.05, "sigma_max": 0.5, "t_eps": 0.03})
    net = _PerfectSGMSENet(exact, (2, 4, 2))
    wrapped = SGMSEScoreDenoiser(SGMSEScore(net, {}), process)
    y4 = y.reshape(6, 2, 4, 2)
    for t in (0.03, 0.2, 0.6, 1.0):
        sigma = float(process.sigma(torch.tensor(t, dtype=torch.float64)))
        u_hat = (x0 - y + sigma * torch.randn(6, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))
        got = wrapped(u_hat.reshape(6, 2, 4, 2), sigma, y=y4).reshape(6, 16)
        want = exact(u_hat, torch.tensor(sigma, dtype=torch.float64), y=y)
        assert torch.allclose(got, want, atol=1e-10), (t, float((got - want).abs().max()))
    # samplerlab's process is SGMSE+'s with the per-real-channel noise: s sigma = std / sqrt(2) at the same t
    t = torch.tensor([0.1, 0.5, 1.0], dtype=torch.float64)
    assert torch.allclose(process.s(t) * process.sigma(t), _PerfectSGMSENet.std(t) / math.sqrt(2), rtol=1e-12)


def test_enhance_runs_an_upstream_checkpoint_end_to_end(tmp_path, capsys):
    """``samplerlab enhance noisy.wav --model file.ckpt`` with a (small, random) SGMSE+ checkpoint in the
    upstream format: its network, process and STFT settings are used, and a file of the input's length comes
    out. (What it sounds like needs trained weights: docs/sgmse.md.)"""
    import numpy as np
    import soundfile

    from samplerlab.cli import main

    _tiny_checkpoint(tmp_path / "model.ckpt")
    rng = np.random.default_rng(0)
    soundfile.write(tmp_path / "noisy.wav", 0.1 * rng.standard_normal(8000).astype(np.float32), 16000)
    assert main(["enhance", str(tmp_path / "noisy.wav"), "--model", str(tmp_path / "model.ckpt"), "--steps", "3",
                 "--solver", "euler", "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    wav, rate = soundfile.read(tmp_path / "out" / "noisy.wav")
    assert rate == 16000 and wav.shape == (8000,) and np.isfinite(wav).all()
    assert main(["enhance", str(tmp_path / "noisy.wav"), "--model", str(tmp_path / "model.ckpt"), "--steps", "4",
                 "--solver", "sgmse-literal", "--out", str(tmp_path / "literal"), "--no-progress"]) == 0
    assert "sgmse-literal, 4 steps (8 NFE per file)" in capsys.readouterr().out
    wav, rate = soundfile.read(tmp_path / "literal" / "noisy.wav")
    assert wav.shape == (8000,) and np.isfinite(wav).all()
    assert main(["enhance", str(tmp_path / "noisy.wav"), "--solver", "sgmse-literal", "--out", str(tmp_path / "x"),
                 "--no-progress"]) == 2
    assert "runs SGMSE+ checkpoints" in capsys.readouterr().err


def test_the_literal_sampler_matches_sgmse_plus_with_the_same_noise():
    """SGMSE+'s own PC sampler (reverse diffusion + annealed Langevin, 30 levels, snr 0.5), run by the upstream
    package with its network, against samplerlab's literal mode with samplerlab's NCSN++ holding the same
    weights, both fed the same recorded noise: outputs agree to 1e-4."""
    from samplerlab.adapters.sgmse import sgmse_literal_pc
    from samplerlab.nets.ncsnpp import NCSNpp

    with unittest.mock.patch("torch.cuda.is_available", return_value=False):
        sdes = pytest.importorskip("sgmse.sdes")
        sampling = pytest.importorskip("sgmse.sampling")
    cfg = dict(nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), image_size=32)
    reference = _perturbed_upstream("ncsnpp", **cfg)
    mine = NCSNpp(**cfg).eval()
    mine.load_state_dict(reference.state_dict())
    g = torch.Generator().manual_seed(3)
    y = 0.3 * torch.randn(2, 1, 32, 16, dtype=torch.complex64, generator=g)
    draws = [torch.randn(2, 1, 32, 16, dtype=torch.complex64, generator=g) for _ in range(61)]

    def recorded():
        it = iter(draws)
        return lambda like: next(it).to(like.dtype)

    sde = sdes.OUVESDE(theta=1.5, sigma_min=0.05, sigma_max=0.5, N=30)
    sampler = sampling.get_pc_sampler("reverse_diffusion", "ald", sde,
                                      lambda x, y_, t: -reference(torch.cat([x, y_], dim=1), t), y, snr=0.5,
                                      corrector_steps=1, denoise=True, eps=0.03)
    with unittest.mock.patch("torch.randn_like", recorded()):
        want, want_nfe = sampler()
    got, nfe = sgmse_literal_pc(lambda x, y_, t: -mine(torch.cat([x, y_], dim=1), t), y, randn=recorded())
    assert nfe == want_nfe == 60
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max())), float((got - want).abs().max())


# SGMSE+'s seven levels at width 4: the middle attention then sees 4 x T/64 positions, as in the real network
# (with two levels it would attend over 128 x T/2, a 10^9-entry matrix for a few seconds of audio)
TINY_SGMSE = dict(nf=4, ch_mult=(1,) * 7, num_res_blocks=1, attn_resolutions=(), image_size=256)


def _tiny_checkpoint(path):
    cfg = TINY_SGMSE
    reference = _perturbed_upstream("ncsnpp", **cfg)
    state = collections.OrderedDict((f"dnn.{k}", v) for k, v in reference.state_dict().items())
    with _Upstream() as up:
        hyper = up.AttributeDict(backbone="ncsnpp", sde="ouve", theta=1.5, sigma_min=0.05, sigma_max=0.5, N=30,
                                 centered=True, t_eps=0.03, nf=4, ch_mult=[1] * 7, num_res_blocks=1, attn_resolutions=[],
                                 data_module_cls=up.SpecsDataModule)
        torch.save({"state_dict": state, "hyper_parameters": hyper}, path)


@pytest.mark.skipif(__import__("shutil").which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_the_schedule_study_runs_on_an_sgmse_checkpoint(tmp_path):
    """A TOML experiment with model = "file.ckpt": the checkpoint brings its process (sqrt(2)-scaled OUVE), on
    which the study's schedules are swapped in."""
    import json

    from samplerlab.adapters.sgmse import sgmse_process
    from samplerlab.experiments.config import ExperimentConfig, StudyConfig
    from samplerlab.experiments.runner import run_experiment
    from samplerlab.speech.corpus import CorpusConfig, make_corpus

    make_corpus(tmp_path / "corpus", CorpusConfig(train=1, valid=1, test=1, seed=3))
    _tiny_checkpoint(tmp_path / "m.ckpt")
    config = ExperimentConfig(name="sgmse", problem="speech", process="ouve", corpus=str(tmp_path / "corpus"),
                              files=1, model=str(tmp_path / "m.ckpt"), metrics=["si_sdr"],
                              studies=[StudyConfig("s", ["euler"], ["base", "vp"], steps=[3])])
    assert run_experiment(config, tmp_path / "run", progress=False)["computed"] == 2
    rows = [json.loads(x) for x in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    process = sgmse_process({"theta": 1.5, "sigma_min": 0.05, "sigma_max": 0.5, "t_eps": 0.03})
    base = next(r for r in rows if r["schedule"] == "base")
    assert base["sigmas"][0] == pytest.approx(float(process.sigma(torch.tensor(1.0, dtype=torch.float64))))
    assert all(r["nfe"] == 3 and math.isfinite(r["metrics"]["si_sdr"]["mean"]) for r in rows)


def test_an_older_checkpoint_without_centered_or_nf_gets_the_settings_it_was_trained_with(tmp_path):
    """Before 1 Nov 2022 SGMSE+'s NCSN++ defaulted to centered=False and did not save the key; the width is read
    from the Fourier-feature weight when the file does not give it."""
    from samplerlab.adapters.sgmse import build_sgmse_network

    cfg = dict(nf=16, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(16,), image_size=32)
    reference = _perturbed_upstream("ncsnpp", centered=False, **cfg)
    state = collections.OrderedDict((f"dnn.{k}", v) for k, v in reference.state_dict().items())
    with _Upstream() as up:
        hyper = up.AttributeDict(backbone="ncsnpp", sde="ouve", ch_mult=[1, 2, 2], num_res_blocks=1,
                                 attn_resolutions=[16], image_size=32, data_module_cls=up.SpecsDataModule)
        torch.save({"state_dict": state, "hyper_parameters": hyper}, tmp_path / "old.ckpt")
    net = build_sgmse_network(read_sgmse_checkpoint(tmp_path / "old.ckpt"))
    assert not net.config.centered and net.config.nf == 16
    x = torch.randn(2, 2, 32, 16, dtype=torch.complex64)
    t = torch.tensor([0.2, 0.5])
    with torch.no_grad():
        want, got = reference(x, t), net(x, t)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))


def _import_upstream_score_model():
    """sgmse.model.ScoreModel with its training-only imports stubbed (Lightning, torchaudio, torch_ema,
    torch_pesq are not installed: they would pull CUDA builds); only its forward and c_in / c_out / c_skip run."""
    stubs = {"pytorch_lightning": {"LightningModule": torch.nn.Module}, "torchaudio": {"load": None},
             "torch_ema": {"ExponentialMovingAverage": None}, "torch_pesq": {"PesqLoss": None}}
    if importlib.util.find_spec("librosa") is None:
        stubs["librosa"] = {"resample": None}
    saved = {name: sys.modules.get(name) for name in stubs}
    try:
        for name, members in stubs.items():
            module = types.ModuleType(name)
            for attr, value in members.items():
                setattr(module, attr, value)
            sys.modules[name] = module
        with unittest.mock.patch("torch.cuda.is_available", return_value=False):
            import sgmse.model as model
        return model.ScoreModel
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
        sys.modules.pop("sgmse.model", None)


@pytest.mark.parametrize("hp", [
    dict(c_in="edm", c_out="edm", c_skip="edm", loss_type="score_matching", network_scaling=None),
    dict(c_in="1", c_out="1/sigma", c_skip="0", loss_type="score_matching", network_scaling="1/t"),
    dict(c_in="edm", c_out="1", c_skip="0", loss_type="denoiser", network_scaling="1/sigma"),
])
def test_the_v2_score_matches_the_upstream_score_model(hp):
    """ncsnpp_v2's EDM-style scaling around the network, against SGMSE+'s ScoreModel.forward."""
    from samplerlab.adapters.sgmse import SGMSEScore
    from samplerlab.nets.ncsnpp import NCSNppConfig, NCSNppV2

    score_model = _import_upstream_score_model()
    sdes = pytest.importorskip("sgmse.sdes")
    cfg = dict(nf=16, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(16,), image_size=32)
    reference = _perturbed_upstream("ncsnpp_v2", **cfg)
    upstream = score_model.__new__(score_model)
    torch.nn.Module.__init__(upstream)
    upstream.dnn, upstream.backbone = reference, "ncsnpp_v2"
    upstream.sde = sdes.OUVESDE(theta=1.5, sigma_min=0.05, sigma_max=0.5, N=30)
    upstream.sigma_data = 0.1
    for key, value in hp.items():
        setattr(upstream, key, value)
    mine = NCSNppV2(NCSNppConfig.for_backbone("ncsnpp_v2", **cfg)).eval()
    mine.load_state_dict(reference.state_dict())
    score = SGMSEScore(mine, {"theta": 1.5, "sigma_min": 0.05, "sigma_max": 0.5, "sigma_data": 0.1, **hp})
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 1, 32, 16, dtype=torch.complex64, generator=g)
    y = torch.randn(2, 1, 32, 16, dtype=torch.complex64, generator=g)
    t = torch.tensor([0.1, 0.7])
    with torch.no_grad():
        want, got = upstream(x, y, t), score(x, y, t)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))
