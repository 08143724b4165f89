"""Command line: ``samplerlab bench | run | train | sample | eval | likelihood | list | ...``.

One module per command, each with ``add_parser(sub)`` and ``run(args)``: it parses, calls the library
and prints; defaults and decisions live in the library. Strings become objects here, once, through
the registries; a bad name gets an error listing the valid ones.
"""

from __future__ import annotations

import argparse
import sys

from ..registry import UnknownNameError
from . import bench, enhance, evaluate, likelihood, listing, optimise_steps, run, sample, schedules, speech, train

__all__ = ["main", "make_parser"]

COMMANDS = (bench, run, schedules, optimise_steps, likelihood, sample, train, evaluate, speech, enhance, listing)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="samplerlab", description="Samplers for diffusion models, measured.")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: $SAMPLERLAB_THREADS or 1; more oversubscribes 2-core machines)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    from ..runtime import configure_threads, foreground_threads

    try:
        configure_threads(args.threads, fallback=foreground_threads() if getattr(args, "foreground", False) else 1)
        return args.func(args)
    except (UnknownNameError, ValueError) as err:
        print(f"samplerlab: error: {err}", file=sys.stderr)
        return 2
