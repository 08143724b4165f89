"""Published EDM and score_sde checkpoints through samplerlab's own networks and loaders.

The reference numbers come from the upstream code (``tools/export_upstream_fixtures.py``, run against the
fetched repositories): tiny configurations' weights, inputs and outputs, as safetensors. Here the EDM ones
are wrapped into synthetic EDM pickles (with a ``module_src`` that would fail loudly if anything executed
it) and the score_sde ones into score_sde-style torch checkpoints, then loaded the way a user loads theirs.
"""

from __future__ import annotations

import collections
import json
import pickle
import sys
import types
from pathlib import Path
from unittest.mock import patch

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from samplerlab.adapters.edm import load_edm, read_edm_pickle
from samplerlab.adapters.published import load_published
from samplerlab.adapters.score_sde import (
    SCORE_SDE_CONFIGS,
    ScoreSDEConfig,
    UnitRangeToSigned,
    load_score_sde,
    resolve_config,
)
from samplerlab.io import CheckpointError
from samplerlab.nets.score_sde_ncsnpp import ScoreSDENCSNpp

FIXTURES = Path(__file__).parent / "fixtures" / "upstream"
EDM_FIXTURES = sorted(FIXTURES.glob("edm_*.safetensors"))
SCORE_SDE_FIXTURES = sorted(FIXTURES.glob("score_sde_*.safetensors"))

ARMED_SOURCE = "raise RuntimeError('EDM module_src was executed')\n"


def _fixture(path: Path) -> tuple[dict, dict]:
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    return load_file(str(path)), meta


def _close(actual: torch.Tensor, expected: torch.Tensor, tol: float = 1e-5) -> None:
    """Equal to ``tol`` relative to the output's scale (float32 networks, values up to ~400)."""
    scale = float(expected.abs().max())
    err = float((actual.double() - expected.double()).abs().max())
    assert err <= tol * max(scale, 1.0), f"max error {err:.3g} at output scale {scale:.3g}"


# --- writing an EDM-format pickle without EDM's code --------------------------------------------------------


class _Persistent:
    """Pickles as EDM's persistence does: a call to torch_utils.persistence._reconstruct_persistent_obj(meta)."""

    def __init__(self, class_name: str, state: dict, source: str = ARMED_SOURCE):
        self.class_name, self.state, self.source = class_name, state, source

    def __reduce__(self):
        meta = dict(type="class", version=6, module_src=self.source, class_name=self.class_name, state=self.state)
        return (sys.modules["torch_utils.persistence"]._reconstruct_persistent_obj, (meta,))


def _fake_persistence(run_source: bool):
    """A stand-in ``torch_utils.persistence`` (writing needs the name; ``run_source`` mimics EDM's loader), to
    install with ``patch.dict(sys.modules, ...)``, which takes it away again."""
    package, module = types.ModuleType("torch_utils"), types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):
        if run_source:
            exec(meta["module_src"], {})  # what EDM's own loader does
        raise AssertionError("the stand-in reconstructor was called")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    module._reconstruct_persistent_obj = _reconstruct_persistent_obj
    package.persistence = module
    return {"torch_utils": package, "torch_utils.persistence": module}


def _module_state(tensors: dict, params: set, init_kwargs=None) -> dict:
    return {
        "training": False,
        "_parameters": collections.OrderedDict((k, torch.nn.Parameter(v, requires_grad=False)) for k, v in tensors.items() if k in params),
        "_buffers": collections.OrderedDict((k, v) for k, v in tensors.items() if k not in params),
        "_non_persistent_buffers_set": set(),
        "_modules": collections.OrderedDict(),
        "_init_args": (),
        "_init_kwargs": dict(init_kwargs or {}),
    }


def _record_tree(state: dict, param_names: set, class_name: str, init_kwargs: dict, containers=("enc", "dec")):
    """Nested records mirroring ``state``'s dotted keys; ``containers`` are torch ModuleDicts."""
    top: dict = {}
    for key, value in state.items():
        node = top
        *path, leaf = key.split(".")
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = value

    def build(node: dict, prefix: str, name: str, kwargs=None):
        leaves = {k: v for k, v in node.items() if isinstance(v, torch.Tensor)}
        params = {k for k in leaves if prefix + k in param_names}
        st = _module_state(leaves, params, kwargs)
        for child, sub in node.items():
            if isinstance(sub, dict):
                st["_modules"][child] = build(sub, f"{prefix}{child}.", child)
        if name in containers:
            container = object.__new__(torch.nn.ModuleDict)
            container.__dict__.update(st)
            return container
        return _Persistent("Block", st)

    return top, build


def _write_edm_pickle(path: Path, fixture: Path, *, extra=None) -> None:
    tensors, meta = _fixture(fixture)
    init = json.loads(meta["init_kwargs"])
    state = {k[len("state.") :]: v.float() for k, v in tensors.items() if k.startswith("state.")}
    params = {k for k, v in tensors.items() if k.startswith("state.") and v.dtype == torch.float16}
    params = {k[len("state.") :] for k in params}
    top, build = _record_tree(state, params, meta["class_name"], init)
    model_kwargs = {k: v for k, v in init.items() if k not in ("img_channels", "model_type", "beta_d", "beta_min",
                                                               "M", "epsilon_t", "sigma_min", "sigma_max", "C_1",
                                                               "C_2", "sigma_data")}
    model_kwargs["in_channels"] = model_kwargs["out_channels"] = init["img_channels"]
    if meta["class_name"] == "iDDPMPrecond":
        model_kwargs["out_channels"] = 2 * init["img_channels"]
    model_record = build(top["model"], "model.", "model", model_kwargs)
    model_record.class_name = init["model_type"]
    outer = _module_state({k: v for k, v in top.items() if isinstance(v, torch.Tensor)}, set(), init)
    outer["_modules"]["model"] = model_record
    data = {
        "ema": _Persistent(meta["class_name"], outer),
        "loss_fn": _Persistent("EDMLoss", {"P_mean": -1.2, "P_std": 1.2, "sigma_data": 0.5}),
        "augment_pipe": None,
        "dataset_kwargs": {"class_name": "training.dataset.ImageFolderDataset", "path": "cifar10.zip"},
        **(extra or {}),
    }
    with patch.dict(sys.modules, _fake_persistence(run_source=False)):
        path.write_bytes(pickle.dumps(data))


@pytest.mark.parametrize("fixture", EDM_FIXTURES, ids=lambda p: p.stem)
def test_an_edm_pickle_matches_the_upstream_network(tmp_path, fixture):
    _write_edm_pickle(tmp_path / "net.pkl", fixture)
    model = load_edm(tmp_path / "net.pkl")
    tensors, meta = _fixture(fixture)
    labels = tensors.get("class_labels")
    with torch.no_grad():
        out = model.denoiser(tensors["x"], tensors["sigma"], class_labels=labels)
    _close(out, tensors["D"])
    assert model.shape == (3, 16, 16)
    assert model.num_classes == json.loads(meta["init_kwargs"])["label_dim"]
    assert 0 < model.sigma_min < model.sigma_max
    if labels is not None:  # integer labels are the same as their one-hot rows
        with torch.no_grad():
            again = model.denoiser(tensors["x"], tensors["sigma"], class_labels=labels.argmax(1))
        assert torch.equal(again, out)


def test_the_pickle_is_armed_and_load_edm_runs_none_of_it(tmp_path):
    """EDM's own loader would exec module_src (here: raise); samplerlab's reads the same file."""
    path = tmp_path / "net.pkl"
    _write_edm_pickle(path, FIXTURES / "edm_vp_ddpmpp.safetensors")
    with patch.dict(sys.modules, _fake_persistence(run_source=True)):
        with pytest.raises(RuntimeError, match="module_src was executed"):
            pickle.loads(path.read_bytes())
    data = read_edm_pickle(path)
    assert data["ema"].class_name == "VPPrecond"
    assert "torch_utils" not in sys.modules
    load_edm(path)


class _Evil:
    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.target}",))


def test_a_crafted_pickle_is_refused_naming_the_file_and_the_global(tmp_path):
    sentinel = tmp_path / "owned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"ema": _Evil(sentinel)}))
    with pytest.raises(CheckpointError, match=r"evil\.pkl: refers to (posix|os|nt)\.system.*nothing was executed"):
        load_edm(path)
    assert not sentinel.exists()


@pytest.mark.parametrize(
    "content, message",
    [
        (b"not a pickle at all", r"junk\.pkl: not (an|a readable) EDM network pickle"),
        (pickle.dumps([1, 2, 3]), r"junk\.pkl: an EDM network pickle holds a dict, this holds a list"),
        (pickle.dumps({"ema": 3}), r"junk\.pkl: 'ema' is not a persistent network object"),
        (pickle.dumps({"loss_fn": 3}), r"junk\.pkl: no 'ema' network in this pickle \(it holds loss_fn\)"),
    ],
)
def test_files_that_are_not_edm_pickles_are_named(tmp_path, content, message):
    (tmp_path / "junk.pkl").write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_edm(tmp_path / "junk.pkl")


def test_a_truncated_edm_pickle_is_named(tmp_path):
    _write_edm_pickle(tmp_path / "full.pkl", FIXTURES / "edm_vp_ddpmpp.safetensors")
    data = (tmp_path / "full.pkl").read_bytes()
    (tmp_path / "cut.pkl").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cut\.pkl: not"):
        load_edm(tmp_path / "cut.pkl")


def test_an_unknown_network_class_is_named_with_the_valid_ones(tmp_path):
    path = tmp_path / "other.pkl"
    _write_edm_pickle(path, FIXTURES / "edm_vp_ddpmpp.safetensors")
    data = read_edm_pickle(path)
    data["ema"].class_name = "StyleGAN3"
    state = data["ema"].state
    rewritten = {"ema": _Persistent("StyleGAN3", {"_init_kwargs": state["_init_kwargs"], "_modules": {}})}
    with patch.dict(sys.modules, _fake_persistence(run_source=False)):
        path.write_bytes(pickle.dumps(rewritten))
    with pytest.raises(CheckpointError, match=r"'StyleGAN3' is not one samplerlab rebuilds; valid: VPPrecond"):
        load_edm(path)


# --- score_sde ------------------------------------------------------------------------------------------------


def _write_score_sde(path: Path, fixture: Path, *, shift_model: float = 0.5) -> dict:
    """A score_sde checkpoint whose EMA holds the fixture's weights and whose raw model differs from them."""
    tensors, meta = _fixture(fixture)
    state = {k[len("state.") :]: v.float() for k, v in tensors.items() if k.startswith("state.")}
    trainable = json.loads(meta["trainable"])
    model = {f"module.{k}": (v + shift_model if k in trainable else v) for k, v in state.items()}
    torch.save(
        {
            "optimizer": {"state": {}, "param_groups": [{"lr": 2e-4, "params": list(range(len(trainable)))}]},
            "model": model,
            "ema": {"decay": 0.999, "num_updates": 10, "shadow_params": [state[k].clone() for k in trainable]},
            "step": 1234,
        },
        path,
    )
    return json.loads(meta["config"])


@pytest.mark.parametrize("fixture", SCORE_SDE_FIXTURES, ids=lambda p: p.stem)
def test_a_score_sde_checkpoint_matches_the_upstream_score(tmp_path, fixture):
    config = _write_score_sde(tmp_path / "checkpoint_8.pth", fixture)
    model = load_score_sde(tmp_path / "checkpoint_8.pth", config=config)
    tensors, _ = _fixture(fixture)
    inner = model.module  # the denoiser on the network's own data range
    t, x_t, score = tensors["t"], tensors["x"], tensors["score"]
    sigma = inner.process.sigma(t.double()).float()
    s = inner.process.s(t.double()).float().reshape(-1, 1, 1, 1)
    with torch.no_grad():
        out = inner(x_t / s, sigma)
    # score_sde's score is that of x_t = s x: D(x) = x + sigma^2 s score
    _close(out, x_t / s + sigma.reshape(-1, 1, 1, 1) ** 2 * s * score)
    assert model.details["step"] == 1234 and model.details["ema"] is True
    raw = load_score_sde(tmp_path / "checkpoint_8.pth", config=config, ema=False)
    with torch.no_grad():
        assert not torch.allclose(raw.module(x_t / s, sigma), out, atol=1e-3)


def test_the_ema_must_fit_the_config(tmp_path):
    config = _write_score_sde(tmp_path / "c.pth", FIXTURES / "score_sde_ve_ncsnpp.safetensors")
    with pytest.raises(CheckpointError, match=r"c\.pth: the EMA holds \d+ tensors, the configured network has \d+"):
        load_score_sde(tmp_path / "c.pth", config={**config, "num_res_blocks": 2})
    with pytest.raises(CheckpointError, match=r"c\.pth: its tensors do not fit the configured network .*size mismatch"):
        load_score_sde(tmp_path / "c.pth", config={**config, "nf": 32})


def test_score_sde_configs_name_their_errors():
    with pytest.raises(ValueError, match=r"unknown score_sde config 've/cifar11'; valid: ve/cifar10_ncsnpp, "):
        resolve_config("ve/cifar11")
    with pytest.raises(ValueError, match=r"unknown field\(s\) nff; valid: "):
        resolve_config({"nff": 3})
    with pytest.raises(ValueError, match=r"resblock_type='ddpm' is not supported"):
        resolve_config({"resblock_type": "ddpm"})
    with pytest.raises(ValueError, match=r"sde 'ode' is not one of vesde, vpsde, subvpsde"):
        resolve_config({"sde": "ode"})
    assert resolve_config("configs/vp/cifar10_ddpmpp_continuous.py") is SCORE_SDE_CONFIGS["vp/cifar10_ddpmpp_continuous"]


@pytest.mark.parametrize("name", list(SCORE_SDE_CONFIGS))
def test_every_published_config_builds_its_network(name):
    """Shapes only (on the meta device): the table describes buildable networks of the published sizes."""
    cfg = SCORE_SDE_CONFIGS[name]
    with torch.device("meta"):
        net = ScoreSDENCSNpp(cfg.net)
    count = sum(p.numel() for p in net.parameters())
    assert 2e7 < count < 2e8, f"{name}: {count} parameters"
    assert cfg.to_dict()["sde"] == cfg.sde
    assert ScoreSDEConfig.from_dict(cfg.to_dict()) == cfg


def test_the_unit_range_wrapper_is_exact_for_a_gaussian():
    """Data y ~ N(m, v) on [0, 1]; x = 2y - 1 ~ N(2m - 1, 4v): the exact denoisers must correspond."""
    m, v = 0.3, 0.04

    def exact_unit(y, sigma, **_):
        sigma = torch.as_tensor(sigma).reshape(-1, 1)
        return m + v / (v + sigma**2) * (y - m)

    wrapped = UnitRangeToSigned(exact_unit)
    x = torch.linspace(-3, 3, 7, dtype=torch.float64).reshape(7, 1)
    sigma = torch.tensor([0.01, 0.1, 0.5, 1.0, 2.0, 10.0, 80.0], dtype=torch.float64)
    mean, var = 2 * m - 1, 4 * v
    expected = mean + var / (var + sigma.reshape(-1, 1) ** 2) * (x - mean)
    assert torch.allclose(wrapped(x, sigma), expected, atol=1e-12)


def test_load_published_picks_the_reader_and_asks_for_a_config(tmp_path):
    _write_edm_pickle(tmp_path / "net.pkl", FIXTURES / "edm_vp_ddpmpp.safetensors")
    assert load_published(tmp_path / "net.pkl").details["network"] == "SongUNet"
    config = _write_score_sde(tmp_path / "c.pth", FIXTURES / "score_sde_vp_ddpmpp.safetensors")
    with pytest.raises(CheckpointError, match=r"c\.pth: a torch checkpoint \(score_sde\?\) needs its architecture"):
        load_published(tmp_path / "c.pth")
    assert load_published(tmp_path / "c.pth", config=config).details["sde"] == "vpsde"
    with pytest.raises(ValueError, match=r"carries its own architecture"):
        load_published(tmp_path / "net.pkl", config="vp/cifar10_ddpmpp")


# --- from the command line -------------------------------------------------------------------------------------


def test_sample_runs_an_edm_pickle_and_a_score_sde_checkpoint(tmp_path, capsys):
    from samplerlab.cli import main

    _write_edm_pickle(tmp_path / "edm.pkl", FIXTURES / "edm_edm_ddpmpp_cond.safetensors")
    config = _write_score_sde(tmp_path / "checkpoint_8.pth", FIXTURES / "score_sde_vp_ddpmpp.safetensors")
    (tmp_path / "vp.json").write_text(json.dumps(config))
    assert main(["sample", "--checkpoint", str(tmp_path / "edm.pkl"), "--steps", "3", "--seeds", "0-3",
                 "--class-label", "7", "--out", str(tmp_path / "a.png"), "--no-progress"]) == 0
    assert "3 NFE" in capsys.readouterr().out and (tmp_path / "a.png").stat().st_size > 0
    assert main(["sample", "--checkpoint", str(tmp_path / "checkpoint_8.pth"), "--config", str(tmp_path / "vp.json"),
                 "--solver", "heun", "--grid", "logsnr", "--steps", "3", "--seeds", "0-1",
                 "--out", str(tmp_path / "b.png"), "--no-progress"]) == 0
    assert "logsnr grid, 5 NFE" in capsys.readouterr().out
    assert main(["sample", "--checkpoint", str(tmp_path / "checkpoint_8.pth"), "--out", str(tmp_path / "c.png")]) == 2
    assert "needs its architecture: give --config NAME" in capsys.readouterr().err


def test_a_published_samples_seed_does_not_depend_on_the_batch(tmp_path):
    """The same seed gives the same image alone or among others (up to float32 rounding)."""
    from samplerlab.experiments.image_eval import sample_checkpoint

    _write_edm_pickle(tmp_path / "edm.pkl", FIXTURES / "edm_vp_ddpmpp.safetensors")
    model = load_edm(tmp_path / "edm.pkl")
    many, _ = sample_checkpoint(model.denoiser, model.meta(), "dpm-solver++", 4, [5, 6, 7])
    one, _ = sample_checkpoint(model.denoiser, model.meta(), "dpm-solver++", 4, [6])
    assert torch.allclose(many[1], one[0], rtol=1e-4, atol=1e-3)  # float32 convolutions: not bit for bit


def test_eval_scores_a_published_checkpoint_against_a_named_data_set(tmp_path, capsys):
    """An EDM pickle, an image folder of 16 x 16 RGB images (two classes) and a TorchScript feature extractor:
    eval samples the model on its own sigma range and scores it against the folder's training split."""
    from PIL import Image

    from samplerlab.cli import main

    _write_edm_pickle(tmp_path / "edm.pkl", FIXTURES / "edm_vp_ddpmpp.safetensors")
    g = torch.Generator().manual_seed(0)
    for label in ("a", "b"):
        (tmp_path / "images" / label).mkdir(parents=True)
        for i in range(20):
            pixels = (torch.rand(16, 16, 3, generator=g) * 255).to(torch.uint8).numpy()
            Image.fromarray(pixels).save(tmp_path / "images" / label / f"{i}.png")
    module = torch.nn.Sequential(torch.nn.AvgPool2d(4), torch.nn.Flatten())
    batch = torch.export.Dim("batch")
    program = torch.export.export(module, (torch.zeros(2, 3, 16, 16),), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(tmp_path / "features.pt2"))
    args = ["eval", "--checkpoint", str(tmp_path / "edm.pkl"), "--solvers", "euler", "--nfe", "3", "--samples", "8",
            "--features", str(tmp_path / "features.pt2"), "--cache", str(tmp_path / "cache"), "--no-progress"]
    assert main(args) == 2
    assert "does not name the data it was trained on; give --data NAME" in capsys.readouterr().err
    assert main(args + ["--data", "image-folder", "--data-dir", str(tmp_path / "images")]) == 0
    out = capsys.readouterr().out
    assert "| euler | 3 | 3 | 3 |" in out and "Fréchet distance to 32 training images" in out
