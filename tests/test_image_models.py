"""Image models: the U-Net, EDM training on images (exact resume, JSONL log, DDP = single process),
seed sharding, the feature classifier and its cached reference statistics, and the train / sample /
eval commands on tiny models."""

import json
import os
import tempfile

import pytest
import torch
import torch.multiprocessing as mp

from samplerlab.data import load_digits, split_dataset
from samplerlab.denoisers import EDMPrecond
from samplerlab.experiments.image_eval import sample_images
from samplerlab.metrics.features import (
    ClassifierFeatures,
    TorchScriptFeatures,
    data_fingerprint,
    reference_statistics,
    train_feature_classifier,
)
from samplerlab.nets import UNet, UNetConfig
from samplerlab.nets.unet import group_norm
from samplerlab.training import TrainConfig, load_checkpoint, train

TINY = dict(channels=8, channel_mult=(1, 2), num_blocks=1, attention_resolutions=(4,))


@pytest.fixture(scope="module")
def digits():
    return split_dataset(load_digits(), 0.2, 0)


# -- the network --------------------------------------------------------------------------------

def test_fresh_unet_gives_the_exact_gaussian_denoiser():
    """F = 0 at initialisation (zero output convolution), so D = c_skip x: the exact denoiser of N(0, sd^2)."""
    net = UNet(1, 8, UNetConfig(**TINY), num_classes=10)
    model = EDMPrecond(net, sigma_data=0.5)
    x = torch.randn(4, 1, 8, 8)
    for sigma in (0.01, 1.0, 50.0):
        out = model(x, torch.tensor(sigma), class_labels=torch.tensor([0, 3, 9, 10]))
        assert torch.allclose(out, 0.25 / (sigma**2 + 0.25) * x)


def test_unet_shapes_classes_and_attention():
    torch.manual_seed(0)
    net = UNet(3, 16, UNetConfig(channels=16, channel_mult=(1, 2, 2), num_blocks=2, attention_resolutions=(8, 4),
                                 attention_heads=2, embedding="fourier"), num_classes=5).eval()
    for p in net.parameters():  # move off the zero initialisation so that every path matters
        p.data.add_(0.05 * torch.randn_like(p))
    x, c = torch.randn(2, 3, 16, 16), torch.tensor([0.1, -0.3])
    out = net(x, c, torch.tensor([1, 2]))
    assert out.shape == x.shape
    assert not torch.allclose(out, net(x, c, torch.tensor([4, 2])))  # the label matters
    assert torch.allclose(net(x, c), net(x, c, torch.tensor([5, 5])))  # no label = the "no label" token
    assert not torch.allclose(out, net(x, c + 1, torch.tensor([1, 2])))  # the noise level matters
    assert sum(isinstance(m, torch.nn.Module) and type(m).__name__ == "SelfAttention" for m in net.modules()) > 1


@pytest.mark.parametrize("kwargs, message", [
    (dict(resolution=6, config=UNetConfig(channel_mult=(1, 2, 2))), "not divisible by 2\\^2"),
    (dict(resolution=8, config=UNetConfig(channels=6, attention_heads=5)), "do not split into 5 attention heads"),
])
def test_unet_rejects_bad_shapes(kwargs, message):
    with pytest.raises(ValueError, match=message):
        UNet(1, **kwargs)


def test_unet_config_errors_name_the_value():
    with pytest.raises(ValueError, match="unknown embedding 'sine'"):
        UNetConfig(embedding="sine")
    with pytest.raises(ValueError, match="dropout must be in"):
        UNetConfig(dropout=1.5)


def test_group_norm_divides_channels():
    for ch in (1, 8, 12, 48, 96, 100, 256):
        gn = group_norm(ch)
        assert ch % gn.num_groups == 0 and gn.num_groups <= 32


# -- training -----------------------------------------------------------------------------------

def test_image_training_resumes_exactly_with_dropout(tmp_path, digits):
    train_set, _ = digits
    data, labels = train_set.data[:256], train_set.labels[:256]
    cfg = TrainConfig(steps=8, batch_size=16, warmup=2, checkpoint_every=100, log_every=2, dropout=0.2, **TINY)
    straight, _ = train(data, cfg, tmp_path / "a", labels=labels)
    train(data, cfg, tmp_path / "b", labels=labels, stop_after=3)
    with open(tmp_path / "b" / "log.jsonl", "a") as f:  # a line written after the checkpoint, then a crash
        f.write(json.dumps({"step": 4, "loss": 123.0}) + "\n")
    resumed, meta = train(data, cfg, tmp_path / "b", labels=labels)
    for p, q in zip(straight.net.state_dict().values(), resumed.net.state_dict().values()):
        assert torch.equal(p, q)
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    # logged from step 1 (a short run has a log), then every log_every steps; the stale line was replaced
    assert steps == [1, 2, 4, 6, 8] and json.loads((tmp_path / "b" / "log.jsonl").read_text().splitlines()[2])["loss"] != 123.0
    seconds = [json.loads(line)["seconds"] for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert seconds == sorted(seconds)  # cumulative across the resume, not restarted from 0
    model, meta = load_checkpoint(tmp_path / "b")
    assert meta["shape"] == [1, 8, 8] and meta["num_classes"] == 10
    assert isinstance(model.net, UNet)


def test_training_calls_back_at_checkpoints(tmp_path, digits):
    seen = []
    cfg = TrainConfig(steps=4, batch_size=8, checkpoint_every=2, **TINY)
    train(digits[0].data[:64], cfg, tmp_path, on_checkpoint=lambda step, model: seen.append((step, type(model))))
    assert seen == [(2, EDMPrecond), (4, EDMPrecond)]


def _ddp_worker(rank, world, init_file, out_dir, data, labels, cfg):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        model, _ = train(data, cfg, out_dir, labels=labels)
        seeds = list(range(7))
        x, _ = sample_images(model, (1, 8, 8), "euler", 3, seeds, num_classes=10)
        if rank == 0:
            torch.save(x, os.path.join(out_dir, "samples.pt"))
        dist.barrier()  # leave together: a rank tearing gloo down while its peer still works can abort it
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_train_like_one_and_shard_seeds(tmp_path, digits):
    """DDP over two ranks, each on half of the same global batch, follows the single-process run; seeds
    sharded over the ranks and gathered give the single-process samples."""
    data, labels = digits[0].data[:128], digits[0].data.new_zeros(128, dtype=torch.long) + digits[0].labels[:128]
    cfg = TrainConfig(steps=5, batch_size=16, warmup=1, dropout=0.0, checkpoint_every=100, **TINY)
    single, _ = train(data, cfg, tmp_path / "single", labels=labels)
    with tempfile.NamedTemporaryFile(dir=tmp_path, delete=False) as f:
        init_file = f.name
    os.unlink(init_file)
    mp.spawn(_ddp_worker, args=(2, init_file, str(tmp_path / "ddp"), data, labels, cfg), nprocs=2, join=True)
    ddp, _ = load_checkpoint(tmp_path / "ddp")
    for p, q in zip(single.net.state_dict().values(), ddp.net.state_dict().values()):
        assert torch.allclose(p, q, atol=1e-6, rtol=1e-5)
    x_single, _ = sample_images(ddp, (1, 8, 8), "euler", 3, list(range(7)), num_classes=10)
    # same seeds, same samples (up to float32 rounding: the ranks' batches have other sizes)
    assert torch.allclose(torch.load(tmp_path / "ddp" / "samples.pt", weights_only=True), x_single, atol=1e-5)


# -- features and reference statistics ------------------------------------------------------------

@pytest.fixture(scope="module")
def classifier(digits):
    train_set, _ = digits
    return train_feature_classifier(train_set.data, train_set.labels, epochs=6)


def test_feature_classifier_learns_digits_and_reference_stats_are_cached(tmp_path, digits, classifier):
    train_set, held = digits
    features = ClassifierFeatures(classifier)
    acc = float((features.predict(held.data) == held.labels).double().mean())
    assert acc > 0.9, acc
    ref = reference_statistics(features, train_set.data, held.data, tag="t", cache=tmp_path, held_out_labels=held.labels)
    again = reference_statistics(features, train_set.data, held.data, tag="t", cache=tmp_path)
    assert again.floor == ref.floor and torch.equal(again.mu, ref.mu) and again.held_out_accuracy == acc
    assert len(list(tmp_path.glob("reference-*.npz"))) == 1
    # the floor is small next to what noise images score
    noise = features(torch.rand(len(held), 1, 8, 8) * 2 - 1).double()
    assert ref.frechet(noise) > 20 * ref.floor


def test_fingerprint_changes_with_the_data(digits):
    a = digits[0].data
    assert data_fingerprint(a) == data_fingerprint(a.clone())
    b = a.clone()
    b[0, 0, 0, 0] += 0.5
    assert data_fingerprint(a) != data_fingerprint(b)


def test_torchscript_feature_extractor(tmp_path):
    class Flat(torch.nn.Module):
        def forward(self, x):
            return x.flatten(1)[:, :5] * 2

    x = torch.randn(3, 1, 8, 8)
    with pytest.warns(DeprecationWarning):
        torch.jit.script(Flat()).save(str(tmp_path / "f.pt"))
    assert torch.equal(TorchScriptFeatures(tmp_path / "f.pt")(x), x.flatten(1)[:, :5] * 2)
    torch.export.save(torch.export.export(Flat(), (x,)), str(tmp_path / "f.pt2"))
    assert torch.equal(TorchScriptFeatures(tmp_path / "f.pt2")(x), x.flatten(1)[:, :5] * 2)
    with pytest.raises(ValueError, match="no such file"):
        TorchScriptFeatures(tmp_path / "missing.pt")
    (tmp_path / "bad.pt").write_text("not torchscript")
    with pytest.raises(ValueError, match="not a TorchScript file"):
        TorchScriptFeatures(tmp_path / "bad.pt")


# -- commands ---------------------------------------------------------------------------------------

def test_train_sample_eval_commands(tmp_path, capsys, monkeypatch):
    from samplerlab.cli import main

    monkeypatch.setenv("SAMPLERLAB_THREADS", "1")
    run = tmp_path / "run"
    args = ["train", "--data", "digits", "--steps", "4", "--batch-size", "8", "--channels", "8", "--channel-mult", "1,2",
            "--checkpoint-every", "2", "--out", str(run), "--no-progress"]
    assert main(args) == 0 and "trained to step 4" in capsys.readouterr().out
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["step-0000002.png", "step-0000004.png"]
    meta = json.loads((run / "checkpoint.json").read_text())
    assert meta["data"] == {"name": "digits", "params": {}, "held_out": 0.2, "split_seed": 0}

    assert main(["sample", "--checkpoint", str(run), "--solver", "heun", "--steps", "3", "--cfg", "2", "--seeds", "0-5",
                 "--class-label", "7", "--out", str(tmp_path / "grid.png"), "--no-progress"]) == 0
    assert "6 samples" in capsys.readouterr().out and (tmp_path / "grid.png").exists()
    assert main(["sample", "--checkpoint", str(run), "--class-label", "10", "--no-progress"]) == 2
    assert "classes 0-9" in capsys.readouterr().err
    assert main(["sample", "--no-progress"]) == 2 and "give one model" in capsys.readouterr().err

    cache = tmp_path / "cache"
    assert main(["eval", "--checkpoint", str(run), "--solvers", "euler,heun", "--nfe", "3,5", "--cfg", "1,2",
                 "--samples", "40", "--cache", str(cache), "--out", str(tmp_path / "eval"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "real-vs-real floor" in out and "| heun | 5 | 3 | 5 | 2 |" in out
    rows = json.loads((tmp_path / "eval" / "results.json").read_text())["rows"]
    assert len(rows) == 8 and all(r["fd"] is None or r["fd"] > 0 for r in rows)
    assert [r["steps"] for r in rows if r["solver"] == "heun" and r["nfe_budget"] == 3] == [2, 2]
    assert list(cache.glob("classifier-*.safetensors")) and list(cache.glob("reference-*.npz"))
    assert all(r["fd"] is None or r["fd_interval"][0] <= r["fd"] * 1.5 and r["fd_interval"][1] >= r["fd"] * 0.5
               for r in rows)

    # a grid calibrated to this (class-conditional) network, then evaluated with FD and its interval
    grid = tmp_path / "digits-euler-3.json"
    assert main(["calibrate", "--checkpoint", str(run), "--solver", "euler", "--nfe", "3", "--fit-samples", "8",
                 "--test-samples", "16", "--max-evaluations", "12", "--out", str(grid), "--no-progress"]) == 0
    assert "calibrated: RMS to teacher" in capsys.readouterr().out
    assert main(["eval", "--checkpoint", str(run), "--solvers", "euler", "--nfe", "3,5", "--grid", str(grid),
                 "--samples", "40", "--cache", str(cache), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "| euler | 3 | 3 | 3 | 1 |" in out and "| euler | 5 | - |" in out and "FD 95 % interval" in out

    assert main(["likelihood", "--checkpoint", str(run), "--samples", "3", "--rtol", "1e-3", "--probes", "2"]) == 0
    out = capsys.readouterr().out
    assert "3 held-out digits images" in out and "bits/dim" in out and "standard error per image" in out

    toy = tmp_path / "toy"
    assert main(["train", "--data", "moons", "--samples", "64", "--steps", "2", "--batch-size", "8", "--hidden", "8",
                 "--depth", "1", "--out", str(toy), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(toy), "--no-progress"]) == 2
    assert "needs an image model" in capsys.readouterr().err


def test_flow_model_train_sample_eval_calibrate_commands(tmp_path, capsys, monkeypatch):
    """train --objective flow, then sample, eval and calibrate on it from the CLI: the checkpoint samples under
    rectified flow on the flow grid by default, and its calibrated grid file is refused under another process."""
    from samplerlab.cli import main
    from samplerlab.grids import GridFile

    monkeypatch.setenv("SAMPLERLAB_THREADS", "1")
    run = tmp_path / "flow"
    assert main(["train", "--objective", "flow", "--data", "digits", "--steps", "4", "--batch-size", "8", "--channels",
                 "8", "--channel-mult", "1,2", "--checkpoint-every", "4", "--out", str(run), "--no-progress"]) == 0
    capsys.readouterr()
    meta = json.loads((run / "checkpoint.json").read_text())
    assert meta["process"] == "rectified-flow" and meta["config"]["objective"] == "flow"
    assert main(["sample", "--checkpoint", str(run), "--solver", "dpm-solver++", "--steps", "4", "--seeds", "0-3",
                 "--out", str(tmp_path / "flow.png"), "--no-progress"]) == 0
    assert "on the flow grid" in capsys.readouterr().out and (tmp_path / "flow.png").exists()
    assert main(["sample", "--checkpoint", str(run), "--grid", "flow:shift=0", "--no-progress"]) == 2
    assert "shift must be a finite number > 0, got 0" in capsys.readouterr().err

    cache = tmp_path / "cache"
    assert main(["eval", "--checkpoint", str(run), "--solvers", "euler", "--nfe", "3", "--grid", "flow:shift=3",
                 "--samples", "20", "--cache", str(cache), "--no-progress"]) == 0
    assert "| euler | 3 | 3 | 3 | 1 |" in capsys.readouterr().out

    grid = tmp_path / "grids" / "new" / "flow-euler-3.json"  # missing folders are made, as the docs write it
    assert main(["calibrate", "--checkpoint", str(run), "--solver", "euler", "--nfe", "3", "--fit-samples", "8",
                 "--test-samples", "16", "--max-evaluations", "12", "--out", str(grid), "--no-progress"]) == 0
    capsys.readouterr()
    made = GridFile.read(grid)
    assert made.provenance["process"] == "rectified-flow" and made.sigmas[0] == pytest.approx(9999.0)
    assert made.provenance["process_params"] == {"t_min": 1e-3, "t_max": pytest.approx(1 - 1e-4)}
    assert made.provenance["baseline"].split(":")[0] in ("karras", "logsnr", "polyexponential", "uniform-time", "flow",
                                                        "flux")
    assert main(["sample", "--checkpoint", str(run), "--solver", "euler", "--steps", "3", "--grid", str(grid),
                 "--seeds", "0-1", "--out", str(tmp_path / "cal.png"), "--no-progress"]) == 0
    capsys.readouterr()
    # the same file with an EDM model: refused before any sampling, naming both processes
    edm = tmp_path / "edm"
    assert main(["train", "--data", "digits", "--steps", "1", "--batch-size", "8", "--channels", "8", "--channel-mult",
                 "1,2", "--out", str(edm), "--no-sample-grids", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["sample", "--checkpoint", str(edm), "--solver", "euler", "--steps", "3", "--grid", str(grid),
                 "--out", str(tmp_path / "x.png"), "--no-progress"]) == 2
    assert "made for the 'rectified-flow' process, not 'edm'" in capsys.readouterr().err
