"""EDM training (Karras et al. 2022, Sec. 5 and Table 1) with exact resume.

Per example: sigma = exp(P_mean + P_std n), n ~ N(0, 1); loss lambda(sigma) ||D(x + sigma e; sigma) - x||^2
with lambda = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 and D the EDM-preconditioned network.
AdamW with linear warm-up, gradient-norm clipping, an EMA of the weights (the model one samples from),
class-label dropout for classifier-free guidance.

Checkpoints are a safetensors file (weights, EMA, optimizer moments, the data-order and noise RNG
states) plus a JSON file (config, step, losses), each written atomically; they load without running
code. ``train`` resumes from the newest checkpoint in its folder, and a resumed run reproduces an
uninterrupted one exactly (tested).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from ..denoisers import EDMPrecond
from ..io import atomic_path, atomic_write_text
from ..nets import MLPDenoiserNet

__all__ = ["TrainConfig", "EDMLoss", "train", "load_checkpoint", "build_net"]


@dataclass
class TrainConfig:
    steps: int = 2000
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 0.0
    warmup: int = 100
    grad_clip: float = 1.0
    ema_decay: float = 0.995
    p_mean: float = -1.2
    p_std: float = 1.2
    sigma_data: float = 0.5
    label_dropout: float = 0.1
    seed: int = 0
    checkpoint_every: int = 500
    # network (MLP for low-dimensional data)
    hidden: int = 128
    depth: int = 3

    def validate(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or not self.lr > 0:
            raise ValueError("steps, batch_size and lr must be positive")
        if not 0 <= self.ema_decay < 1 or not 0 <= self.label_dropout < 1:
            raise ValueError("ema_decay and label_dropout must be in [0, 1)")


class EDMLoss:
    def __init__(self, p_mean: float, p_std: float, sigma_data: float):
        self.p_mean, self.p_std, self.sigma_data = p_mean, p_std, sigma_data

    def __call__(self, denoiser, x: Tensor, g: torch.Generator, **cond) -> Tensor:
        n = torch.randn(x.shape[0], generator=g, dtype=x.dtype)
        sigma = torch.exp(self.p_mean + self.p_std * n)
        noise = torch.randn(x.shape, generator=g, dtype=x.dtype)
        s = sigma.reshape(-1, *([1] * (x.ndim - 1)))
        weight = (s**2 + self.sigma_data**2) / (s * self.sigma_data) ** 2
        d = denoiser(x + s * noise, sigma, **cond)
        return (weight * (d - x) ** 2).mean()


def build_net(dim: int, num_classes: int, config: TrainConfig) -> MLPDenoiserNet:
    torch.manual_seed(config.seed)  # initial weights depend on the seed only
    return MLPDenoiserNet(dim, config.hidden, config.depth, num_classes=num_classes)


def _state_tensors(net, ema, opt, data_rng, noise_rng) -> dict[str, Tensor]:
    out = {f"net.{k}": v.detach().clone().contiguous() for k, v in net.state_dict().items()}
    out.update({f"ema.{k}": v.detach().clone().contiguous() for k, v in ema.state_dict().items()})
    for i, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            out[f"opt.{i}.{k}"] = torch.as_tensor(v).detach().clone().contiguous()
    out["rng.data"] = data_rng.get_state()
    out["rng.noise"] = noise_rng.get_state()
    return out


def _save(out_dir: Path, step: int, tensors: dict, meta: dict) -> None:
    from safetensors.torch import save_file

    with atomic_path(out_dir / "checkpoint.safetensors") as tmp:
        save_file(tensors, str(tmp))
    atomic_write_text(out_dir / "checkpoint.json", json.dumps({**meta, "step": step}, indent=2) + "\n")


def load_checkpoint(path: str | Path) -> tuple[EDMPrecond, dict]:
    """The EMA model of a checkpoint folder as a denoiser, and its JSON metadata (no code is run)."""
    from safetensors.torch import load_file

    path = Path(path)
    folder = path if path.is_dir() else path.parent
    try:
        meta = json.loads((folder / "checkpoint.json").read_text())
        tensors = load_file(str(folder / "checkpoint.safetensors"))
    except FileNotFoundError as err:
        raise ValueError(f"{folder}: no checkpoint ({err.filename} is missing)") from None
    config = TrainConfig(**meta["config"])
    net = build_net(meta["dim"], meta["num_classes"], config)
    net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
    net.eval()
    return EDMPrecond(net, config.sigma_data), meta


def train(
    data: Tensor,
    config: TrainConfig,
    out_dir: str | Path,
    *,
    labels: Tensor | None = None,
    stop_after: int | None = None,
    progress: bool = False,
    log: Callable[[dict], None] | None = None,
) -> tuple[EDMPrecond, dict]:
    """Train (or resume) an EDM model on ``data`` (N, d); returns the EMA denoiser and the metadata.

    ``stop_after`` ends the run after that many steps in this call (an interruption, for tests)."""
    from safetensors.torch import load_file

    config.validate()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = data.to(torch.float32)
    dim = data[0].numel()
    num_classes = 0 if labels is None else int(labels.max()) + 1
    net = build_net(dim, num_classes, config)
    ema = build_net(dim, num_classes, config)
    ema.load_state_dict(net.state_dict())
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    data_rng = torch.Generator().manual_seed(config.seed + 1)
    noise_rng = torch.Generator().manual_seed(config.seed + 2)
    step, losses = 0, []
    meta = {"config": dataclasses.asdict(config), "dim": dim, "num_classes": num_classes, "losses": losses}
    ckpt = out_dir / "checkpoint.safetensors"
    if ckpt.exists():
        prev = json.loads((out_dir / "checkpoint.json").read_text())
        if prev["config"] != meta["config"] or prev["dim"] != dim:
            raise ValueError(f"{out_dir} holds a checkpoint of another configuration; use a new folder")
        tensors = load_file(str(ckpt))
        net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
        ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
        state = opt.state_dict()
        for key, v in tensors.items():
            if key.startswith("opt."):
                _, i, name = key.split(".", 2)
                state["state"].setdefault(int(i), {})[name] = v
        opt.load_state_dict(state)
        data_rng.set_state(tensors["rng.data"])
        noise_rng.set_state(tensors["rng.noise"])
        step, losses = prev["step"], prev["losses"]
        meta["losses"] = losses
    loss_fn = EDMLoss(config.p_mean, config.p_std, config.sigma_data)
    denoiser = EDMPrecond(net, config.sigma_data)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.steps, initial=step, desc="train", unit="step")
    done_here = 0
    start = time.perf_counter()
    while step < config.steps and (stop_after is None or done_here < stop_after):
        idx = torch.randint(len(data), (config.batch_size,), generator=data_rng)
        cond = {}
        if labels is not None:
            lab = labels[idx].clone()
            drop = torch.rand(config.batch_size, generator=data_rng) < config.label_dropout
            lab[drop] = num_classes
            cond["class_labels"] = lab
        for group in opt.param_groups:
            group["lr"] = config.lr * min(1.0, (step + 1) / max(1, config.warmup))
        loss = loss_fn(denoiser, data[idx], noise_rng, **cond)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip)
        opt.step()
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), net.parameters()):
                pe.lerp_(p, 1 - config.ema_decay)
        step += 1
        done_here += 1
        losses.append(float(loss.detach()))
        if bar:
            bar.set_postfix(loss=f"{float(loss):.4f}")
            bar.update(1)
        if log and step % 100 == 0:
            log({"step": step, "loss": sum(losses[-100:]) / len(losses[-100:]), "seconds": time.perf_counter() - start})
        if step % config.checkpoint_every == 0 or step == config.steps or (stop_after and done_here == stop_after):
            _save(out_dir, step, _state_tensors(net, ema, opt, data_rng, noise_rng), meta)
    if bar:
        bar.close()
    ema.eval()
    return EDMPrecond(ema, config.sigma_data), {**meta, "step": step}
