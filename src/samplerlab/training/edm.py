"""EDM training (Karras et al. 2022, Sec. 5 and Table 1) with exact resume, or flow matching.

Per example: sigma = exp(P_mean + P_std n), n ~ N(0, 1); loss lambda(sigma) ||D(x + sigma e; sigma) - x||^2
with lambda = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 and D the EDM-preconditioned network. With
``objective = "flow"`` the network predicts the rectified-flow velocity and the loss is conditional flow
matching at logit-normal t (``training.loss.FlowMatchingLoss``); everything else is shared.
AdamW with linear warm-up, gradient-norm clipping, an EMA of the weights (the model one samples from),
class-label dropout for classifier-free guidance.

Checkpoints are a safetensors file (weights, EMA, optimizer moments, the data-order and noise RNG
states) plus a JSON file (config, step, losses), each written atomically; they load without running
code. ``train`` resumes from the newest checkpoint in its folder, and a resumed run reproduces an
uninterrupted one exactly (tested). Progress goes to ``log.jsonl`` in the run folder.

Launched with torchrun (a process group initialised), the network is wrapped in
DistributedDataParallel and each rank trains on its slice of the same global batch: every rank draws
the global batch indices, sigmas and noise from the same generators and keeps its part, so a run on
W processes follows the single-process run with the same global batch (tested with two gloo ranks).
Only rank 0 writes checkpoints and logs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from ..distributed import all_reduce_mean, rank_and_world
from ..io import atomic_write_text, remove_stale_temporaries
from ..nets import NETS, UNetConfig
from .checkpoint import TENSORS_FILE, CheckpointError, read_checkpoint, write_checkpoint
from .loss import OBJECTIVES, SIGMA_DISTRIBUTIONS, EDMLoss

__all__ = ["TrainConfig", "EDMLoss", "TensorSource", "train", "load_checkpoint", "build_net"]


@dataclass
class TrainConfig:
    steps: int = 2000
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 0.0
    warmup: int = 100
    grad_clip: float = 1.0
    ema_decay: float = 0.995
    # what the network predicts (training.loss.OBJECTIVES): "edm" (EDM's preconditioned denoiser) or "flow"
    # (rectified-flow velocity, conditional flow matching; sampled under the rectified-flow process)
    objective: str = "edm"
    # log-normal noise levels, ln sigma ~ N(p_mean, p_std^2); None: the objective's default (EDM's -1.2, 1.2;
    # flow: 0, 1, the logit-normal t of Esser et al. 2024, since ln sigma = logit t under rectified flow)
    p_mean: float | None = None
    p_std: float | None = None
    sigma_data: float = 0.5
    label_dropout: float = 0.1
    seed: int = 0
    checkpoint_every: int = 500
    log_every: int = 100
    amp: bool = True  # bfloat16 autocast where the device supports it (CUDA); CPU runs in float32
    # noise levels (training.loss.SIGMA_DISTRIBUTIONS): "lognormal" (EDM: ln sigma ~ N(p_mean, p_std^2)) or
    # "ouve" (t ~ U(t_eps, 1) of the OUVE process, SGMSE+'s denoising score matching)
    sigma_distribution: str = "lognormal"
    net: str = "auto"  # a name of nets.NETS, or auto
    # MLP (low-dimensional data)
    hidden: int = 128
    depth: int = 3
    # U-Net (images); see nets.unet.UNetConfig
    channels: int = 32
    channel_mult: tuple[int, ...] = (1, 2, 2)
    num_blocks: int = 1
    attention_resolutions: tuple[int, ...] = (4,)
    dropout: float = 0.1

    def __post_init__(self):
        objective = OBJECTIVES.get(self.objective)
        self.p_mean = objective.p_mean if self.p_mean is None else self.p_mean
        self.p_std = objective.p_std if self.p_std is None else self.p_std
        self.channel_mult = tuple(int(m) for m in self.channel_mult)
        self.attention_resolutions = tuple(int(r) for r in self.attention_resolutions)

    def validate(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or not self.lr > 0:
            raise ValueError(
                f"steps, batch_size and lr must be positive, got {self.steps}, {self.batch_size}, {self.lr}"
            )
        if not 0 <= self.ema_decay < 1 or not 0 <= self.label_dropout < 1:
            raise ValueError(
                f"ema_decay and label_dropout must be in [0, 1), got {self.ema_decay}, {self.label_dropout}"
            )
        if self.net != "auto":  # auto: the U-Net for images (C, H, W), the MLP otherwise
            NETS.get(self.net)
        SIGMA_DISTRIBUTIONS.get(self.sigma_distribution)

    def unet_config(self) -> UNetConfig:
        return UNetConfig(
            channels=self.channels,
            channel_mult=self.channel_mult,
            num_blocks=self.num_blocks,
            attention_resolutions=self.attention_resolutions,
            dropout=self.dropout,
        )

    @classmethod
    def for_data(cls, images: bool, **settings) -> "TrainConfig":
        """samplerlab train's defaults: images (U-Net, ~10 min on digits on 2 cores) or 2-D toys (MLP);
        ``settings`` that are None keep the default."""
        defaults = (
            dict(steps=4000, batch_size=128, lr=2e-3, ema_decay=0.999, warmup=200)
            if images
            else dict(steps=3000, batch_size=256, lr=2e-3)
        )
        return cls(**{**defaults, **{k: v for k, v in settings.items() if v is not None}})

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown training settings {unknown}; valid: {sorted(names)}")
        return cls(**d)


class TensorSource:
    """Training examples from a tensor (N, ...), with optional class labels dropped to the "no label"
    token at rate ``label_dropout`` (classifier-free guidance, Ho & Salimans 2022)."""

    def __init__(self, data: Tensor, labels: Tensor | None = None, label_dropout: float = 0.0):
        self.data = data.to(torch.float32)
        self.labels = labels
        self.label_dropout = label_dropout
        self.shape = tuple(self.data.shape[1:])
        self.num_classes = 0 if labels is None else int(labels.max()) + 1

    def draw(self, batch_size: int, g: torch.Generator) -> tuple[Tensor, dict]:
        idx = torch.randint(len(self.data), (batch_size,), generator=g)
        cond = {}
        if self.labels is not None:
            lab = self.labels[idx].clone()
            drop = torch.rand(batch_size, generator=g) < self.label_dropout
            lab[drop] = self.num_classes
            cond["class_labels"] = lab
        return self.data[idx], cond


def build_net(shape: tuple[int, ...] | int, num_classes: int, config: TrainConfig) -> torch.nn.Module:
    """The network for examples of ``shape`` (an int: a flat vector); initial weights depend on the seed only."""
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    kind = config.net if config.net != "auto" else ("unet" if len(shape) == 3 else "mlp")
    builder = NETS.get(kind)
    torch.manual_seed(config.seed)
    return builder(shape, num_classes, config)


def _state_tensors(net, ema, opt, data_rng, noise_rng) -> dict[str, Tensor]:
    out = {f"net.{k}": v.detach().clone().contiguous() for k, v in net.state_dict().items()}
    out.update({f"ema.{k}": v.detach().clone().contiguous() for k, v in ema.state_dict().items()})
    for i, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            out[f"opt.{i}.{k}"] = torch.as_tensor(v).detach().clone().contiguous()
    out["rng.data"] = data_rng.get_state()
    out["rng.noise"] = noise_rng.get_state()
    out["rng.torch"] = torch.get_rng_state()  # dropout draws from the global generator
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["rng.cuda"] = torch.cuda.get_rng_state()
    return out


class _DeferredInterrupt:
    """Within the block, the first Ctrl-C (SIGINT) only sets ``requested`` (the loop finishes its step, saves and
    stops: no step is half done in a checkpoint); a second one interrupts at once. Outside the main thread (no
    signal handlers there) it does nothing."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


def _save(out_dir: Path, step: int, tensors: dict, meta: dict) -> None:
    write_checkpoint(out_dir, tensors, {**meta, "step": step})


def _example_shape(meta: dict) -> tuple[int, ...]:
    return tuple(meta["shape"]) if "shape" in meta else (meta["dim"],)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[Callable, dict]:
    """The EMA model of a checkpoint folder as a denoiser D(x_hat, sigma) (EDM-preconditioned, or a rectified-flow
    velocity adapter for ``objective = "flow"``), and its JSON metadata with the ``process`` it samples under (no
    code is run); a file that is not a usable checkpoint raises ``CheckpointError`` naming it
    (``training.checkpoint``)."""
    meta, tensors = read_checkpoint(path)
    config = _config_of(meta, path)
    net = _build_checked(meta, config, path)
    _load_part(net, tensors, "ema.", path)
    net.to(device).eval()
    objective = OBJECTIVES.get(config.objective)
    return objective.denoiser(net, config.sigma_data), {**meta, "process": objective.process.name}


def _config_of(meta: dict, where) -> TrainConfig:
    try:
        config = TrainConfig.from_dict(meta["config"])
        config.validate()
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{where}: its training config is not one this samplerlab reads ({err})") from None
    return config


def _build_checked(meta: dict, config: TrainConfig, where) -> torch.nn.Module:
    shape = _example_shape(meta)
    if not shape or any(not isinstance(n, int) or n < 1 for n in shape) or meta["num_classes"] < 0:
        raise CheckpointError(f"{where}: bad example shape {list(shape)} or num_classes {meta['num_classes']}")
    try:
        return build_net(shape, meta["num_classes"], config)
    except (TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{where}: its config describes no network that can be built ({err})") from None


def _load_part(module: torch.nn.Module, tensors: dict, prefix: str, where) -> None:
    """Load the tensors under ``prefix`` strictly, with an error naming the file and the mismatch."""
    part = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    try:
        module.load_state_dict(part)
    except RuntimeError as err:
        detail = " ".join(str(err).split())[:400]
        raise CheckpointError(
            f"{where}: its {prefix.rstrip('.')} tensors do not fit the network its config describes ({detail})"
        ) from None


def _step_of(line: str) -> float:
    """The step of a log line; a torn or malformed line (a kill mid-write) counts as after every step."""
    try:
        return json.loads(line).get("step", 0)
    except (ValueError, AttributeError):
        return math.inf


class _JsonlLog:
    """log.jsonl of a run, trimmed on resume to the checkpoint's step so that no line is repeated."""

    def __init__(self, path: Path, step: int):
        self.path = path
        if path.exists():
            keep = [line for line in path.read_text().splitlines() if _step_of(line) <= step]
            atomic_write_text(path, "".join(line + "\n" for line in keep))

    def write(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")


def train(
    data: "Tensor | TensorSource",
    config: TrainConfig,
    out_dir: str | Path,
    *,
    labels: Tensor | None = None,
    stop_after: int | None = None,
    progress: bool = False,
    log: Callable[[dict], None] | None = None,
    on_checkpoint: Callable[[int, Callable], None] | None = None,
    device: str | torch.device = "cpu",
    data_info: dict | None = None,
) -> tuple[Callable, dict]:
    """Train (or resume) an EDM or flow-matching model on ``data`` (N, ...) or an example source (``draw(batch, generator)``
    returning examples and their conditioning); returns the EMA denoiser and the metadata.

    ``stop_after`` ends the run after that many steps in this call (an interruption, for tests);
    ``on_checkpoint(step, ema_denoiser)`` runs on rank 0 after each checkpoint (e.g. a sample grid);
    ``data_info`` (e.g. the data set's name and split) is stored in the checkpoint's JSON for evaluation."""
    config.validate()
    rank, world = rank_and_world()
    if config.batch_size % world:
        raise ValueError(f"batch_size {config.batch_size} does not split evenly over {world} processes")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir} exists and is not a folder")
    created = not out_dir.exists()
    try:
        return _train(
            data, config, out_dir, labels, stop_after, progress, log, on_checkpoint, torch.device(device), data_info
        )
    except BaseException:
        # a run that fails (or is interrupted) before its first checkpoint leaves no folder behind
        if created and rank == 0 and not (out_dir / TENSORS_FILE).exists():
            shutil.rmtree(out_dir, ignore_errors=True)
        raise


def _train(data, config, out_dir, labels, stop_after, progress, log, on_checkpoint, device, data_info):
    rank, world = rank_and_world()
    out_dir.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        remove_stale_temporaries(out_dir)  # of a run killed mid-write
    source = data if hasattr(data, "draw") else TensorSource(data, labels, config.label_dropout)
    shape, num_classes = source.shape, source.num_classes
    net = build_net(shape, num_classes, config).to(device)
    ema = build_net(shape, num_classes, config).to(device)
    ema.load_state_dict(net.state_dict())
    ema.requires_grad_(False)
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    data_rng = torch.Generator().manual_seed(config.seed + 1)
    noise_rng = torch.Generator().manual_seed(config.seed + 2)
    torch.manual_seed(config.seed + 3 + 1000 * rank)  # dropout masks: their own stream per rank
    step, losses = 0, []
    objective = OBJECTIVES.get(config.objective)
    meta = {
        "config": dataclasses.asdict(config),
        "shape": list(shape),
        "dim": math.prod(shape),
        "num_classes": num_classes,
        "data": data_info or {},
        "process": objective.process.name,
        "losses": losses,
    }
    if (out_dir / TENSORS_FILE).exists():
        prev, tensors = read_checkpoint(out_dir)
        # a run may be extended (more steps, other checkpoint / log intervals); anything else is another run
        free = {"steps", "checkpoint_every", "log_every"}
        mine_cfg = {k: v for k, v in json.loads(json.dumps(meta["config"])).items() if k not in free}
        prev_cfg = {k: v for k, v in prev["config"].items() if k not in free}
        if prev_cfg != mine_cfg or _example_shape(prev) != shape:
            diff = sorted(k for k in set(prev_cfg) | set(mine_cfg) if prev_cfg.get(k) != mine_cfg.get(k))
            raise ValueError(
                f"{out_dir} holds a checkpoint of another configuration (differs in {diff or ['shape']}); "
                "use a new folder"
            )
        _load_part(net, tensors, "net.", out_dir)
        _load_part(ema, tensors, "ema.", out_dir)
        missing = sorted({"rng.data", "rng.noise"} - set(tensors))
        if missing:
            raise CheckpointError(f"{out_dir / TENSORS_FILE}: not a resumable checkpoint (no {missing})")
        state = opt.state_dict()
        for key, v in tensors.items():
            if key.startswith("opt."):
                _, i, name = key.split(".", 2)
                state["state"].setdefault(int(i), {})[name] = v
        opt.load_state_dict(state)
        data_rng.set_state(tensors["rng.data"])
        noise_rng.set_state(tensors["rng.noise"])
        if "rng.torch" in tensors and rank == 0:
            torch.set_rng_state(tensors["rng.torch"])
        if "rng.cuda" in tensors and device.type == "cuda" and rank == 0:
            torch.cuda.set_rng_state(tensors["rng.cuda"])
        step, losses = prev["step"], prev["losses"]
        meta["losses"] = losses
        meta["seconds"] = float(prev.get("seconds", 0.0))  # training time before this run, for cumulative logs
    jsonl = _JsonlLog(out_dir / "log.jsonl", step) if rank == 0 else None
    loss_fn = objective.loss(config.p_mean, config.p_std, config.sigma_data, config.sigma_distribution)
    model = net
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    denoiser = objective.denoiser(model, config.sigma_data)
    autocast = config.amp and device.type == "cuda"
    per_rank = config.batch_size // world
    mine = slice(rank * per_rank, (rank + 1) * per_rank)
    bar = None
    if progress and rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.steps, initial=step, desc="train", unit="step")
    done_here = 0
    start, before = time.perf_counter(), float(meta.get("seconds", 0.0))

    def elapsed() -> float:
        """Training seconds over every run of this folder (a resumed run goes on counting)."""
        return round(before + time.perf_counter() - start, 3)

    net.train()
    saved = step
    interrupted = _DeferredInterrupt()  # Ctrl-C ends the run at the end of the step it arrives in
    with interrupted:
        while step < config.steps and (stop_after is None or done_here < stop_after):
            # every rank draws the whole global batch from the same generators and keeps its slice
            x0, cond = source.draw(config.batch_size, data_rng)
            cond = {k: v[mine].to(device) for k, v in cond.items()}
            sigma, noise = loss_fn.draw((config.batch_size, *shape), noise_rng)
            for group in opt.param_groups:
                group["lr"] = config.lr * min(1.0, (step + 1) / max(1, config.warmup))
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                loss = loss_fn.weighted(
                    denoiser, x0[mine].to(device), sigma[mine].to(device), noise[mine].to(device), **cond
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip)
            opt.step()
            with torch.no_grad():
                for pe, p in zip(ema.parameters(), net.parameters()):
                    pe.lerp_(p, 1 - config.ema_decay)
            loss = all_reduce_mean(loss)  # the logged loss is the global batch's
            step += 1
            done_here += 1
            losses.append(float(loss.detach()))
            if bar:
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
                bar.update(1)
            # logged from the first step, every log_every steps and at the last, so a short run has a log too; each
            # line averages the steps since the previous scheduled line (the same lines whether resumed or not)
            if rank == 0 and (step % config.log_every == 0 or step == 1 or step == config.steps):
                first = (
                    step - config.log_every
                    if step % config.log_every == 0
                    else (step // config.log_every) * config.log_every
                )
                tail = losses[max(first, 0) : step] if step > 1 else losses[:1]
                record = {
                    "step": step,
                    "loss": sum(tail) / len(tail),
                    "lr": opt.param_groups[0]["lr"],
                    "seconds": elapsed(),
                }
                jsonl.write(record)
                if log:
                    log(record)
            if step % config.checkpoint_every == 0 or step == config.steps or (stop_after and done_here == stop_after):
                if rank == 0:
                    meta["seconds"] = elapsed()
                    _save(out_dir, step, _state_tensors(net, ema, opt, data_rng, noise_rng), meta)
                    saved = step
                    if on_checkpoint:
                        ema.eval()
                        on_checkpoint(step, objective.denoiser(ema, config.sigma_data))
            if interrupted.requested:
                break
    if interrupted.requested:
        # keep the steps made since the last checkpoint (one process: several would have to agree first)
        if rank == 0 and world == 1 and step > saved:
            meta["seconds"] = elapsed()
            _save(out_dir, step, _state_tensors(net, ema, opt, data_rng, noise_rng), meta)
        if bar:
            bar.close()
        print(f"interrupted after step {step}; rerun the same command to resume from it", file=sys.stderr)
        raise KeyboardInterrupt
    if bar:
        bar.close()
    ema.eval()
    return objective.denoiser(ema, config.sigma_data), {**meta, "step": step}
