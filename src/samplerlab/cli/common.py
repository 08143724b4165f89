"""Argument types and option groups shared by several commands."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

from ..registry import parse_value

__all__ = [
    "csv_list",
    "int_list",
    "float_list",
    "key_values",
    "solver_params",
    "add_unet_args",
    "add_device_arg",
    "add_no_progress",
    "output_dir",
    "output_file",
    "positive_int",
    "nonnegative_int",
]


def _writable_parent(path: Path) -> None:
    """``path`` can be created: its nearest existing ancestor is a folder we may write in (the writers create
    the missing folders between, as ``io.atomic_path`` does, so ``--out grids/new/g.json`` works as written)."""
    parent = path.parent if str(path.parent) else Path(".")
    existing = parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise argparse.ArgumentTypeError(f"{path}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{path}: cannot write in {existing}")


def output_dir(text: str) -> str:
    """An output folder: an existing writable folder, or a new one (with any missing folders above it) under an
    existing writable folder. Checked when the arguments are parsed, before any work, and nothing is created
    here."""
    path = Path(text)
    if path.exists():
        if not path.is_dir():
            raise argparse.ArgumentTypeError(f"{text} exists and is not a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise argparse.ArgumentTypeError(f"cannot write in {text}")
    else:
        _writable_parent(path)
    return text


def output_file(text: str, suffixes: tuple[str, ...] = ()) -> str:
    """An output file: not a folder, in a folder that exists or can be made (``_writable_parent``), with one of
    ``suffixes`` if given."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; give a file name")
    if suffixes and path.suffix.lower() not in suffixes:
        raise argparse.ArgumentTypeError(f"{text}: the file type must be one of {', '.join(suffixes)}")
    if path.exists() and not os.access(path, os.W_OK):
        raise argparse.ArgumentTypeError(f"cannot overwrite {text}")
    _writable_parent(path)
    return text


def image_file(text: str) -> str:
    from ..imaging import FIGURE_FORMATS

    return output_file(text, tuple(FIGURE_FORMATS))


def json_file(text: str) -> str:
    return output_file(text, (".json",))


def positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


MAX_SAMPLES = 10_000_000  # per run: beyond it the arrays alone outgrow a machine; split the run over seeds
MAX_BATCH = 65_536


def sample_count(text: str) -> int:
    """A number of samples / points: 1 .. MAX_SAMPLES, refused before anything is allocated."""
    value = positive_int(text)
    if value > MAX_SAMPLES:
        raise argparse.ArgumentTypeError(
            f"expected at most {MAX_SAMPLES} samples, got {text!r} (split a larger run over seed ranges)"
        )
    return value


def batch_size(text: str) -> int:
    value = positive_int(text)
    if value > MAX_BATCH:
        raise argparse.ArgumentTypeError(f"expected a batch of at most {MAX_BATCH}, got {text!r}")
    return value


def seed_list(text: str) -> list[int]:
    """'0-63', '1,5,9' or '0-9,20': at most a million seeds, each in [0, 2^64)."""
    from ..noise import parse_seeds

    try:
        seeds = parse_seeds(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    bad = next((s for s in seeds if not 0 <= s < 2**64), None)
    if bad is not None:
        raise argparse.ArgumentTypeError(f"seed {bad} in {text!r} is outside [0, 2^64)")
    return seeds


def nonnegative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_float(text: str) -> float:
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def dropout_rate(text: str) -> float:
    value = finite_float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a rate in [0, 1), got {text!r}")
    return value


def device(text: str) -> str:
    """cpu, cuda, cuda:N or mps, and only one this machine has."""
    import torch

    try:
        dev = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"unknown device {text!r}; valid: cpu, cuda, cuda:N, mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"device {text!r}: CUDA is not available on this machine; use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"device {text!r}: this machine has {torch.cuda.device_count()} GPU(s)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError(f"device {text!r}: MPS is not available on this machine; use --device cpu")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise argparse.ArgumentTypeError(f"unsupported device {text!r}; valid: cpu, cuda, cuda:N, mps")
    return text


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def csv_list(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def int_list(text: str) -> list[int]:
    try:
        values = [int(p) for p in csv_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    return values


def positive_int_list(text: str) -> list[int]:
    values = int_list(text)
    bad = [v for v in values if v < 1]
    if bad:
        raise argparse.ArgumentTypeError(f"expected integers >= 1, got {bad[0]} in {text!r}")
    return values


def float_list(text: str) -> list[float]:
    try:
        values = [float(p) for p in csv_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    bad = [v for v in values if not math.isfinite(v)]
    if not values or bad:
        raise argparse.ArgumentTypeError(f"expected comma-separated finite numbers, got {text!r}")
    return values


def key_values(items: list[str] | None, what: str) -> dict:
    """['rho=7', 't-max=80'] -> {'rho': 7, 't_max': 80}."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"{what} must look like KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip().replace("-", "_")] = parse_value(v.strip())
    return out


def solver_params(items: list[str] | None) -> dict[str, dict]:
    """['ddim.eta=0.5'] -> {'ddim': {'eta': 0.5}}."""
    out: dict[str, dict] = {}
    for item in items or []:
        target, eq, value = item.partition("=")
        spec, dot, key = target.rpartition(".")
        if not eq or not dot or not spec or not key:
            raise ValueError(f"--solver-param must look like SOLVER.KEY=VALUE (e.g. ddim.eta=0.5), got {item!r}")
        out.setdefault(spec, {})[key.strip().replace("-", "_")] = parse_value(value.strip())
    return out


def add_unet_args(p: argparse.ArgumentParser, channels: int, mult: list[int], attention: list[int]) -> None:
    p.add_argument("--channels", type=int, default=channels, help=f"U-Net base width (default: {channels})")
    p.add_argument(
        "--channel-mult",
        type=int_list,
        default=mult,
        help=f"U-Net widths per level (default: {','.join(map(str, mult))})",
    )
    p.add_argument("--num-blocks", type=int, default=1, help="U-Net residual blocks per level (default: 1)")
    p.add_argument(
        "--attention",
        type=int_list,
        default=attention,
        help=f"resolutions (first spatial axis) with self-attention (default: {','.join(map(str, attention))})",
    )


def unet_settings(args) -> dict:
    """The U-Net options of ``add_unet_args`` as TrainConfig fields."""
    return dict(
        channels=args.channels,
        channel_mult=tuple(args.channel_mult),
        num_blocks=args.num_blocks,
        attention_resolutions=tuple(args.attention),
    )


def add_device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", type=device, help="cpu, cuda or mps (default: cuda when available)")


def add_training_run_args(p: argparse.ArgumentParser, func, *, out: str | None, out_help: str) -> None:
    """What every training command takes after its model options: checkpoint interval, device, seed,
    output folder, progress; training owns the machine, so it defaults to all usable cores."""
    p.add_argument("--checkpoint-every", type=positive_int, default=500)
    add_device_arg(p)
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.add_argument("--out", type=output_dir, default=out, help=out_help)
    add_no_progress(p)
    p.set_defaults(func=func, foreground=True)


def add_no_progress(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


CHECKPOINT_HELP = (
    "a folder written by samplerlab train, an EDM network pickle (network-snapshot-*.pkl) or a score_sde "
    "checkpoint (checkpoint_N.pth, with --config)"
)


def add_published_config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        help="score_sde checkpoints: the config it was trained with, e.g. ve/cifar10_ncsnpp_continuous "
        "(samplerlab list shows them), or a JSON file of its fields",
    )


def load_image_model(path: str, config: str | None = None):
    """(denoiser, meta) of a samplerlab checkpoint folder or a published checkpoint file; ``meta`` has the
    sample shape, the number of classes and, for published models, their trained sigma range."""
    from ..adapters.published import is_published_checkpoint, load_published

    if is_published_checkpoint(path):
        model = load_published(path, config=config)
        return model.denoiser, model.meta()
    if config is not None:
        raise ValueError(f"--config {config!r} is for score_sde checkpoint files; {path} is a samplerlab checkpoint")
    from ..training import load_checkpoint

    return load_checkpoint(path)
