import json

import pytest
import torch

from samplerlab.analytic import GaussianMixture
from samplerlab.data import make_toy
from samplerlab.grids import karras
from samplerlab.metrics import sliced_wasserstein2
from samplerlab.sampling import generate
from samplerlab.solvers import make_solver
from samplerlab.training import EDMLoss, TrainConfig, load_checkpoint, train


def test_edm_loss_of_the_exact_denoiser_is_its_irreducible_minimum():
    """For Gaussian data the exact D gives lambda E||D - x||^2 = lambda sigma^2 v / (v + sigma^2) per coordinate;
    a wrong denoiser scores higher."""
    v = 0.25
    model = GaussianMixture.gaussian(torch.zeros(2, dtype=torch.float64), torch.full((2,), v, dtype=torch.float64))
    x = model.sample(20000, torch.Generator().manual_seed(0))
    loss = EDMLoss(-1.2, 1.2, 0.5)
    exact = float(loss(model, x, torch.Generator().manual_seed(1)))
    worse = float(loss(lambda z, s: 0.9 * model(z, s), x, torch.Generator().manual_seed(1)))
    assert exact < worse
    # sigma_data = sqrt(v): lambda sigma^2 v / (v + sigma^2) = 1 exactly, for every sigma
    assert exact == pytest.approx(1.0, rel=0.03)


def test_flow_matching_loss_of_the_exact_velocity_is_its_irreducible_minimum():
    """For Gaussian data N(0, v) the target eps - x_0 has conditional variance v / ((1 - t)^2 v + t^2) given x_t
    (per coordinate), the least any velocity can reach; the exact model reaches it and a wrong one does not."""
    from samplerlab.denoisers import Prediction, PredictionAdapter, edm_noise_input
    from samplerlab.processes import RectifiedFlow
    from samplerlab.training.loss import FlowMatchingLoss

    v = 0.25
    model = GaussianMixture.gaussian(torch.zeros(2, dtype=torch.float64), torch.full((2,), v, dtype=torch.float64))

    def exact_velocity(x_t, c_noise, scale=1.0):
        sigma = torch.exp(4 * c_noise).reshape(-1, 1)
        t = sigma / (1 + sigma)
        return scale * (x_t - model(x_t / (1 - t), sigma[:, 0])) / t

    x = model.sample(20000, torch.Generator().manual_seed(0))
    loss = FlowMatchingLoss()
    exact = float(loss(PredictionAdapter(exact_velocity, RectifiedFlow(), Prediction.FLOW, noise_input=edm_noise_input),
                       x, torch.Generator().manual_seed(1)))
    worse = float(loss(PredictionAdapter(lambda a, b: exact_velocity(a, b, 0.7), RectifiedFlow(), Prediction.FLOW,
                                         noise_input=edm_noise_input), x, torch.Generator().manual_seed(1)))
    sigma, _ = loss.draw(tuple(x.shape), torch.Generator().manual_seed(1), x.dtype)
    t = sigma / (1 + sigma)
    minimum = float((v / ((1 - t) ** 2 * v + t**2)).mean())
    assert exact == pytest.approx(minimum, rel=0.02) and worse > 1.01 * exact


def test_logit_normal_time_is_log_normal_sigma():
    """Esser et al. 2024's logit-normal t (m = 0, s = 1) is ln sigma ~ N(0, 1) under rectified flow."""
    from samplerlab.training.loss import OBJECTIVES

    config = TrainConfig(objective="flow")
    assert (config.p_mean, config.p_std) == (0.0, 1.0) and (TrainConfig().p_mean, TrainConfig().p_std) == (-1.2, 1.2)
    loss = OBJECTIVES.get("flow").loss(config.p_mean, config.p_std, config.sigma_data)
    sigma, _ = loss.draw((100_000, 1), torch.Generator().manual_seed(0), torch.float64)
    logit_t = torch.logit(sigma / (1 + sigma))
    assert abs(float(logit_t.mean())) < 0.02 and float(logit_t.std()) == pytest.approx(1.0, abs=0.02)


def test_resumed_training_equals_uninterrupted(tmp_path):
    data = make_toy("moons", 512, seed=0).float()
    labels = (data[:, 0] > 0).long()
    cfg = TrainConfig(steps=30, batch_size=32, warmup=5, checkpoint_every=1000, hidden=32, depth=2)
    straight, _ = train(data, cfg, tmp_path / "a", labels=labels)
    train(data, cfg, tmp_path / "b", labels=labels, stop_after=12)  # interrupted after 12 steps
    meta = json.loads((tmp_path / "b" / "checkpoint.json").read_text())
    assert meta["step"] == 12
    resumed, meta = train(data, cfg, tmp_path / "b", labels=labels)
    assert meta["step"] == 30
    for p, q in zip(straight.net.state_dict().values(), resumed.net.state_dict().values()):
        assert torch.equal(p, q)
    loaded, meta = load_checkpoint(tmp_path / "b")
    for p, q in zip(straight.net.state_dict().values(), loaded.net.state_dict().values()):
        assert torch.equal(p, q)
    # a finished run can be extended: 30 more steps continue it exactly like a 60-step run
    longer = TrainConfig(steps=60, batch_size=32, warmup=5, checkpoint_every=1000, hidden=32, depth=2)
    extended, meta = train(data, longer, tmp_path / "b", labels=labels)
    straight60, _ = train(data, longer, tmp_path / "c", labels=labels)
    assert meta["step"] == 60
    for p, q in zip(straight60.net.state_dict().values(), extended.net.state_dict().values()):
        assert torch.equal(p, q)
    with pytest.raises(ValueError, match="another configuration \\(differs in \\['batch_size'\\]\\)"):
        train(data, TrainConfig(steps=30, batch_size=16, warmup=5, hidden=32, depth=2), tmp_path / "b", labels=labels)
    with pytest.raises(ValueError, match="nothing: no such checkpoint folder"):
        load_checkpoint(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty: no checkpoint .*checkpoint.json is missing"):
        load_checkpoint(tmp_path / "empty")


def test_ctrl_c_keeps_every_finished_step_and_the_run_resumes_exactly(tmp_path, capsys):
    """Ctrl-C (SIGINT) ends a run at the end of the step it arrives in and checkpoints it, though the next
    scheduled checkpoint is far away; rerunning the same call continues exactly like an uninterrupted run."""
    import os
    import signal

    data = make_toy("moons", 512, seed=0).float()
    labels = (data[:, 0] > 0).long()
    cfg = TrainConfig(steps=30, batch_size=32, warmup=5, checkpoint_every=1000, log_every=1, hidden=32, depth=2)
    straight, _ = train(data, cfg, tmp_path / "a", labels=labels)

    def press_ctrl_c(record):
        if record["step"] == 7:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        train(data, cfg, tmp_path / "b", labels=labels, log=press_ctrl_c)
    assert "interrupted after step 7; rerun the same command" in capsys.readouterr().err
    assert json.loads((tmp_path / "b" / "checkpoint.json").read_text())["step"] == 7
    resumed, meta = train(data, cfg, tmp_path / "b", labels=labels)
    assert meta["step"] == 30
    for p, q in zip(straight.net.state_dict().values(), resumed.net.state_dict().values()):
        assert torch.equal(p, q)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is given back


def test_a_short_training_run_learns_the_toy(tmp_path):
    data = make_toy("ring", 4096, seed=0).float()
    cfg = TrainConfig(steps=1500, batch_size=256, warmup=50, checkpoint_every=10_000, hidden=96, depth=3,
                      sigma_data=0.75, ema_decay=0.99)
    model, meta = train(data, cfg, tmp_path / "ring")
    assert sum(meta["losses"][-100:]) / 100 < sum(meta["losses"][:100]) / 100
    with torch.no_grad():
        x = generate(model, (2,), karras(30, sigma_min=0.002, sigma_max=80.0), make_solver("heun"), range(2000)).x
    real = make_toy("ring", 2000, seed=1).double()
    floor = sliced_wasserstein2(make_toy("ring", 2000, seed=2).double(), real)
    untrained = sliced_wasserstein2(torch.randn(2000, 2, dtype=torch.float64), real)
    sw = sliced_wasserstein2(x.double(), real)
    # measured: 0.077 against a floor of 0.050 and 0.405 for N(0, I)
    assert sw < 0.25 * untrained and sw < 3 * floor, (sw, floor, untrained)


def test_a_short_flow_matching_run_learns_the_toy_and_samples_under_rectified_flow(tmp_path):
    from samplerlab.denoisers import PredictionAdapter
    from samplerlab.grids import make_grid
    from samplerlab.processes import RectifiedFlow

    data = make_toy("ring", 4096, seed=0).float()
    cfg = TrainConfig(steps=1000, batch_size=256, warmup=50, checkpoint_every=10_000, hidden=96, depth=3,
                      sigma_data=0.75, ema_decay=0.99, objective="flow")
    model, meta = train(data, cfg, tmp_path / "ring")
    assert isinstance(model, PredictionAdapter) and meta["process"] == "rectified-flow"
    assert sum(meta["losses"][-100:]) / 100 < sum(meta["losses"][:100]) / 100
    loaded, loaded_meta = load_checkpoint(tmp_path / "ring")
    assert loaded_meta["process"] == "rectified-flow" and loaded_meta["config"]["objective"] == "flow"
    with torch.no_grad():
        x = generate(loaded, (2,), make_grid("flow", 30, RectifiedFlow()), make_solver("heun"), range(2000),
                     process=RectifiedFlow()).x
    real = make_toy("ring", 2000, seed=1).double()
    floor = sliced_wasserstein2(make_toy("ring", 2000, seed=2).double(), real)
    untrained = sliced_wasserstein2(torch.randn(2000, 2, dtype=torch.float64), real)
    sw = sliced_wasserstein2(x.double(), real)
    assert sw < 0.3 * untrained and sw < 3 * floor, (sw, floor, untrained)
    # a flow run does not resume an EDM folder (or the other way)
    with pytest.raises(ValueError, match="another configuration \\(differs in \\['objective', 'p_mean', 'p_std'\\]"):
        train(data, TrainConfig(steps=1000, batch_size=256, warmup=50, checkpoint_every=10_000, hidden=96, depth=3,
                                sigma_data=0.75, ema_decay=0.99), tmp_path / "ring")


def test_cli_train_resumes(tmp_path, capsys):
    from samplerlab.cli import main

    args = ["train", "--data", "moons", "--samples", "256", "--steps", "20", "--batch-size", "16", "--hidden", "16",
            "--depth", "1", "--out", str(tmp_path / "m"), "--no-progress"]
    assert main(args) == 0 and "trained to step 20" in capsys.readouterr().out
    assert main(args) == 0 and "trained to step 20" in capsys.readouterr().out  # nothing left to do
    assert main(["train", "--data", "cifar10", "--no-progress"]) == 2


def test_every_gradient_has_its_parameters_layout():
    """DDP copies gradients into buckets laid out like the parameters; a gradient with other strides (a 1 x 1
    convolution fed a channels-last view gets one) makes every rank warn and copy. None may differ."""
    import torch

    from samplerlab.nets import NETS
    from samplerlab.training import TrainConfig

    net = NETS.get("unet")((1, 8, 8), 10, TrainConfig())
    net(torch.randn(4, 1, 8, 8), torch.zeros(4), torch.zeros(4, dtype=torch.long)).sum().backward()
    differing = [n for n, p in net.named_parameters() if p.grad is not None and p.grad.stride() != p.stride()]
    assert not differing
