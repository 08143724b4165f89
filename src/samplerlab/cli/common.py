"""Argument types and option groups shared by several commands."""

from __future__ import annotations

import argparse

from ..solvers.base import parse_value

__all__ = [
    "csv_list",
    "int_list",
    "float_list",
    "key_values",
    "solver_params",
    "add_unet_args",
    "add_device_arg",
    "add_no_progress",
]


def csv_list(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def int_list(text: str) -> list[int]:
    try:
        return [int(p) for p in csv_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def float_list(text: str) -> list[float]:
    try:
        return [float(p) for p in csv_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


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
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")


def add_training_run_args(p: argparse.ArgumentParser, func, *, out: str | None, out_help: str) -> None:
    """What every training command takes after its model options: checkpoint interval, device, seed,
    output folder, progress; training owns the machine, so it defaults to all usable cores."""
    p.add_argument("--checkpoint-every", type=int, default=500)
    add_device_arg(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=out, help=out_help)
    add_no_progress(p)
    p.set_defaults(func=func, foreground=True)


def add_no_progress(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
