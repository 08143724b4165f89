"""Command line: ``samplerlab bench | run | train | sample | eval | likelihood | list | ...``.

One module per command, each with ``add_parser(sub)`` and ``run(args)``: it parses, calls the library
and prints; defaults and decisions live in the library. Strings become objects here, once, through
the registries; a bad name gets an error listing the valid ones.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from ..registry import UnknownNameError
from . import (
    bench,
    calibrate,
    enhance,
    evaluate,
    likelihood,
    listing,
    optimise_steps,
    run,
    sample,
    schedules,
    speech,
    train,
)
from .common import positive_int

__all__ = ["main", "make_parser"]

COMMANDS = (
    bench,
    run,
    schedules,
    calibrate,
    optimise_steps,
    likelihood,
    sample,
    train,
    evaluate,
    speech,
    enhance,
    listing,
)


class OneLineParser(argparse.ArgumentParser):
    """argparse with its usage errors on one line (the usage itself is in --help), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


THREADS_HELP = (
    "torch threads (default: $SAMPLERLAB_THREADS, else 1, and all usable cores for the training "
    "commands, which own the machine; more than the free cores oversubscribes)"
)


def _add_threads_everywhere(parser: argparse.ArgumentParser) -> None:
    """``--threads`` after the command name too (``samplerlab bench --threads 2``): every subcommand takes it,
    and leaves the value given before the command alone when it is not given again."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                child.add_argument("--threads", type=positive_int, default=argparse.SUPPRESS, help=THREADS_HELP)
                _add_threads_everywhere(child)


def make_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = OneLineParser(prog="samplerlab", description="Samplers for diffusion models, measured.")
    parser.add_argument("--version", action="version", version=f"samplerlab {__version__}")
    parser.add_argument("--threads", type=positive_int, default=None, help=THREADS_HELP)
    parser.add_argument(
        "--debug",
        action="store_true",
        default=bool(os.environ.get("SAMPLERLAB_DEBUG")),
        help="show the traceback of an error (or set SAMPLERLAB_DEBUG=1)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    _add_threads_everywhere(parser)
    return parser


USAGE_ERRORS = (UnknownNameError, ValueError)  # bad input: exit status 2, like argparse's own


def main(argv: list[str] | None = None) -> int:
    """Run a command: 0 on success; 2 for a bad input (one line on stderr, as argparse's errors), 1 for a
    failure while working (a file that cannot be read, a diverging run, ...), 130 when interrupted. The
    traceback is shown only with ``--debug`` or SAMPLERLAB_DEBUG=1."""
    try:
        args = make_parser().parse_args(argv)
    except SystemExit as done:  # --help, or a usage error already printed: its status, not an exception
        return done.code if isinstance(done.code, int) else 2
    from ..runtime import configure_threads, foreground_threads

    try:
        configure_threads(args.threads, fallback=foreground_threads() if getattr(args, "foreground", False) else 1)
        return args.func(args)
    except KeyboardInterrupt:
        print("samplerlab: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (samplerlab list | head): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 0
    except Exception as err:  # noqa: BLE001 - the one place every error becomes a message
        if args.debug:
            traceback.print_exc()
        usage = isinstance(err, USAGE_ERRORS)
        kind = "" if usage or isinstance(err, (OSError, RuntimeError)) else f"{type(err).__name__}: "
        hint = "" if args.debug else " (--debug shows the traceback)"
        message = str(err) or type(err).__name__
        print(f"samplerlab: error: {kind}{message}{'' if usage else hint}", file=sys.stderr)
        return 2 if usage else 1
