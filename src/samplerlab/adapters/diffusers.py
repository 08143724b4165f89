"""Hugging Face diffusers models as samplerlab denoisers (optional: ``pip install samplerlab[diffusers]``).

``load_diffusers(DIR)`` reads a local UNet2DModel folder, or a pipeline folder with ``unet/`` and
``scheduler/``, rebuilds alpha_bar_k from the scheduler config (beta_schedule linear, scaled_linear,
squaredcos_cap_v2 or trained_betas; Ho et al. 2020; Nichol & Dhariwal 2021) and wraps the UNet with
``DiscreteDDPMAdapter`` for its prediction type (epsilon, v_prediction, sample). Every samplerlab
solver and grid then runs on it. The state lives in VP coordinates (x_t = alpha x_0 + sigma_t eps), so
pass ``process=VPLinear()`` (any VP process has s = 1 / sqrt(1 + sigma^2)). ``timestep_grid`` gives the
sigmas of diffusers' own timestep spacings, for like-for-like comparisons.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..denoisers import DiscreteDDPMAdapter, Prediction

__all__ = ["DiffusersModel", "load_diffusers", "alphas_cumprod_from_config", "timestep_grid"]

_PREDICTIONS = {"epsilon": Prediction.EPSILON, "v_prediction": Prediction.V, "sample": Prediction.X0}


def alphas_cumprod_from_config(config: dict) -> Tensor:
    """alpha_bar_k, k = 0..T-1, from a diffusers scheduler config."""
    T = int(config.get("num_train_timesteps", 1000))
    if config.get("trained_betas") is not None:
        betas = torch.tensor(config["trained_betas"], dtype=torch.float64)
    else:
        schedule = config.get("beta_schedule", "linear")
        start, end = float(config.get("beta_start", 1e-4)), float(config.get("beta_end", 0.02))
        if schedule == "linear":
            betas = torch.linspace(start, end, T, dtype=torch.float64)
        elif schedule == "scaled_linear":
            betas = torch.linspace(start**0.5, end**0.5, T, dtype=torch.float64) ** 2
        elif schedule == "squaredcos_cap_v2":  # Nichol & Dhariwal 2021, eq. 17 with betas clipped at 0.999

            def f(t):
                return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

            betas = torch.tensor([min(1 - f((k + 1) / T) / f(k / T), 0.999) for k in range(T)], dtype=torch.float64)
        else:
            raise ValueError(f"unsupported beta_schedule {schedule!r}; valid: linear, scaled_linear, squaredcos_cap_v2")
    return torch.cumprod(1 - betas, dim=0)


@dataclass
class DiffusersModel:
    denoiser: DiscreteDDPMAdapter
    unet: object
    scheduler_config: dict
    sample_shape: tuple[int, ...]
    prediction: Prediction

    def __call__(self, x, sigma, **cond):
        return self.denoiser(x, sigma, **cond)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"missing {path}") from None
    except ValueError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None


def load_diffusers(
    path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> DiffusersModel:
    try:
        from diffusers import UNet2DModel
    except ImportError:
        raise ImportError(
            "the diffusers adapter needs the diffusers package: pip install 'samplerlab[diffusers]'"
        ) from None
    path = Path(path)
    unet_dir = path / "unet" if (path / "unet").is_dir() else path
    if not (unet_dir / "config.json").exists():
        raise ValueError(f"{path} holds no diffusers UNet (no config.json in it or in unet/)")
    sched_file = path / "scheduler" / "scheduler_config.json"
    if not sched_file.exists():
        sched_file = path / "scheduler_config.json"
    sched = _read_json(sched_file) if sched_file.exists() else {}
    unet = UNet2DModel.from_pretrained(unet_dir, torch_dtype=dtype, low_cpu_mem_usage=False).to(device).eval()
    kind = sched.get("prediction_type", "epsilon")
    if kind not in _PREDICTIONS:
        raise ValueError(f"unsupported prediction_type {kind!r}; valid: {', '.join(_PREDICTIONS)}")

    def net(x_t, k, **cond):
        return unet(x_t, k, **cond).sample

    adapter = DiscreteDDPMAdapter(net, alphas_cumprod_from_config(sched), _PREDICTIONS[kind])
    cfg = unet.config
    shape = (
        (cfg.in_channels, cfg.sample_size, cfg.sample_size)
        if isinstance(cfg.sample_size, int)
        else (cfg.in_channels, *cfg.sample_size)
    )
    return DiffusersModel(adapter, unet, sched, shape, _PREDICTIONS[kind])


def timestep_grid(
    model: DiffusersModel | DiscreteDDPMAdapter, num_steps: int, spacing: str = "leading", steps_offset: int = 0
) -> Tensor:
    """Sigmas at diffusers' timesteps for ``num_steps`` (spacing leading / linspace / trailing), then 0."""
    adapter = model.denoiser if isinstance(model, DiffusersModel) else model
    T = len(adapter.sigmas)
    if spacing == "leading":
        ks = [k * (T // num_steps) + steps_offset for k in range(num_steps)][::-1]
    elif spacing == "linspace":
        ks = [round(v) for v in torch.linspace(0, T - 1, num_steps + 1, dtype=torch.float64).tolist()][::-1][:-1]
    elif spacing == "trailing":
        ks = [round(T - i * T / num_steps) - 1 for i in range(num_steps)]
    else:
        raise ValueError(f"unknown timestep spacing {spacing!r}; valid: leading, linspace, trailing")
    return torch.cat([adapter.sigmas[ks], torch.zeros(1, dtype=torch.float64)])


def sample_diffusers(model: DiffusersModel, solver, steps: int, seeds, *, grid: str = "karras", progress: bool = False):
    """Sample a loaded diffusers model with any samplerlab solver from its prior N(0, I) (VP coordinates).
    ``grid``: a samplerlab grid on the model's sigma range, or diffusers-leading / -linspace / -trailing
    for diffusers' own timesteps. Returns the ``SampleResult``."""
    from ..grids import make_grid
    from ..noise import SampleNoise
    from ..processes import VPLinear
    from ..sampling import sample

    process = VPLinear()  # the state is in VP coordinates; every VP process has s = 1 / sqrt(1 + sigma^2)
    if grid.startswith("diffusers-"):
        sigmas = timestep_grid(model, steps, grid.removeprefix("diffusers-"))
    else:
        sigmas = make_grid(grid, steps, process, sigma_min=model.denoiser.sigma_min, sigma_max=model.denoiser.sigma_max)
    noise = SampleNoise(seeds, dtype=torch.float32)
    x_T = noise.randn(*model.sample_shape)
    return sample(
        model, x_T, sigmas, solver, process=process, noise=noise if solver.stochastic else None, progress=progress
    )
