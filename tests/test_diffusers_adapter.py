"""samplerlab's DDIM and DPM-Solver++(2M) on a diffusers UNet agree with diffusers' own schedulers."""

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from samplerlab.adapters.diffusers import alphas_cumprod_from_config, load_diffusers, timestep_grid  # noqa: E402
from samplerlab.denoisers import Prediction  # noqa: E402
from samplerlab.processes import VPLinear  # noqa: E402
from samplerlab.sampling import sample  # noqa: E402
from samplerlab.solvers import make_solver  # noqa: E402

SCHEDULE = dict(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)


def _tiny_unet():
    torch.manual_seed(0)
    return diffusers.UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4)


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("pipe")
    _tiny_unet().save_pretrained(path / "unet")
    return path


def _reference_loop(scheduler, unet, x_T):
    x = x_T.clone() * scheduler.init_noise_sigma
    with torch.no_grad():
        for t in scheduler.timesteps:
            x = scheduler.step(unet(x, t).sample, t, x).prev_sample
    return x


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("steps", [5, 12, 20])
def test_ddim_and_dpm_solver_pp_agree_with_diffusers(pipeline_dir, prediction, steps):
    x_T = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ddim = diffusers.DDIMScheduler(**SCHEDULE, prediction_type=prediction, clip_sample=False)
    ddim.save_pretrained(pipeline_dir / "scheduler")
    model = load_diffusers(pipeline_dir, dtype=torch.float64)
    assert model.prediction is {"epsilon": Prediction.EPSILON, "v_prediction": Prediction.V}[prediction]
    assert model.sample_shape == (1, 8, 8)
    ddim.set_timesteps(steps)
    want = _reference_loop(ddim, model.unet, x_T)
    got = sample(model, x_T, timestep_grid(model, steps, "leading"), make_solver("ddim"), process=VPLinear()).x
    scale = float(want.abs().max())
    assert float((got - want).abs().max()) < 1e-5 * scale  # diffusers keeps alpha_bar in float32

    dpm = diffusers.DPMSolverMultistepScheduler(**SCHEDULE, prediction_type=prediction, algorithm_type="dpmsolver++",
                                                solver_order=2)
    dpm.set_timesteps(steps)
    want = _reference_loop(dpm, model.unet, x_T)
    got = sample(model, x_T, timestep_grid(model, steps, dpm.config.timestep_spacing), make_solver("dpm-solver++"),
                 process=VPLinear()).x
    assert float((got - want).abs().max()) < 1e-5 * float(want.abs().max())


def test_alphas_cumprod_match_diffusers_schedulers():
    for schedule in ("linear", "scaled_linear", "squaredcos_cap_v2"):
        s = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule=schedule)
        ours = alphas_cumprod_from_config(dict(s.config))
        assert torch.allclose(ours.float(), s.alphas_cumprod, rtol=1e-5, atol=1e-7)


def test_load_errors(tmp_path):
    with pytest.raises(ValueError, match="holds no diffusers UNet"):
        load_diffusers(tmp_path)
    _tiny_unet().save_pretrained(tmp_path / "unet")
    (tmp_path / "scheduler").mkdir()
    (tmp_path / "scheduler" / "scheduler_config.json").write_text('{"prediction_type": "flow"}')
    with pytest.raises(ValueError, match="unsupported prediction_type 'flow'"):
        load_diffusers(tmp_path)
    with pytest.raises(ValueError, match="unsupported beta_schedule"):
        alphas_cumprod_from_config({"beta_schedule": "sigmoid"})


def test_cli_sample_writes_a_png_grid(pipeline_dir, tmp_path, capsys):
    from samplerlab.cli import main

    diffusers.DDIMScheduler(**SCHEDULE).save_pretrained(pipeline_dir / "scheduler")
    out = tmp_path / "grid.png"
    assert main(["sample", "--diffusers", str(pipeline_dir), "--solver", "unipc", "--steps", "6", "--seeds", "0-3",
                 "--out", str(out), "--no-progress"]) == 0
    assert "4 samples" in capsys.readouterr().out
    from PIL import Image

    assert Image.open(out).size == (19, 19)  # 2 x 2 tiles of 8 x 8 with 1-pixel padding
    assert main(["sample", "--diffusers", str(pipeline_dir), "--grid", "diffusers-trailing", "--steps", "4",
                 "--seeds", "0-1", "--out", str(tmp_path / "g2.png"), "--no-progress"]) == 0
    assert main(["sample"]) == 2
