"""``samplerlab schedules plot``: draw the study's schedule shapes (and their steps) to a PNG."""

from __future__ import annotations

from .common import csv_list, float_list, image_file, positive_float, positive_int


def add_parser(sub) -> None:
    sched = sub.add_parser("schedules", help="schedule tools")
    sched_sub = sched.add_subparsers(dest="schedules_command", required=True)
    p = sched_sub.add_parser("plot", help="draw sigma(t) of schedules (and their steps) to a PNG")
    p.add_argument(
        "--shapes",
        default="base,linear,subvp,ve,vp,edm",
        help="comma-separated shapes; 'base' is the process's own (default: all)",
    )
    p.add_argument("--process", default="ouve", help="whose range and time the shapes take (default: ouve)")
    p.add_argument("--steepness", type=float_list, help="steepness exponents to draw, e.g. 1,1.2,1.5")
    p.add_argument("--steps", type=positive_int, help="also mark N time steps")
    p.add_argument("--offset", type=positive_float, default=1.0, help="timestep offset alpha for the marked steps")
    p.add_argument("--power", type=positive_float, default=1.0, help="power warp of the marked steps")
    p.add_argument("--out", type=image_file, default="schedules.png")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..experiments.plots import plot_schedule_family
    from ..processes import make_process

    plot_schedule_family(
        make_process(args.process),
        csv_list(args.shapes),
        args.out,
        steepness=args.steepness,
        steps=args.steps or 0,
        offset=args.offset,
        power=args.power,
    )
    print(f"wrote {args.out}")
    return 0
