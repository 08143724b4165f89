"""``samplerlab sample``: a trained checkpoint or a local diffusers model, sampled to a PNG grid."""

from __future__ import annotations

import time

from .common import (
    CHECKPOINT_HELP,
    add_no_progress,
    add_published_config_arg,
    finite_float,
    image_file,
    load_image_model,
    nonnegative_int,
    positive_int,
    seed_list,
)

GRID_HELP = (
    "karras, exponential, logsnr, flow:shift=3, ... on the model's sigma range, a grid file of samplerlab calibrate "
    "(--checkpoint), or diffusers-leading / diffusers-linspace / diffusers-trailing for diffusers' own timesteps "
    "(default: the model's, karras; flow for a flow-matching model)"
)


def add_parser(sub) -> None:
    p = sub.add_parser("sample", help="sample a model to a PNG grid")
    p.add_argument("--diffusers", help="local diffusers UNet2DModel or pipeline folder (needs samplerlab[diffusers])")
    p.add_argument("--solver", default="dpm-solver++", help="solver spec (default: dpm-solver++)")
    p.add_argument("--steps", type=positive_int, default=20)
    p.add_argument("--grid", help=GRID_HELP)
    p.add_argument("--checkpoint", help=CHECKPOINT_HELP)
    add_published_config_arg(p)
    p.add_argument("--cfg", type=finite_float, default=1.0, help="classifier-free guidance scale (default: 1, none)")
    p.add_argument("--class-label", type=nonnegative_int, help="one class for every sample (default: seed %% classes)")
    p.add_argument("--seeds", type=seed_list, default="0-15", help="e.g. 0-63 or 1,5,9")
    p.add_argument("--out", type=image_file, default="samples.png")
    add_no_progress(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..imaging import save_image_grid

    if bool(args.diffusers) == bool(args.checkpoint):
        raise ValueError(
            "give one model: --checkpoint PATH (a samplerlab train folder, an EDM .pkl, a score_sde .pth) or --diffusers DIR "
            "(a local diffusers UNet2DModel or pipeline folder)"
        )
    seeds = args.seeds
    if args.checkpoint:
        return _sample_checkpoint(args, seeds)
    from ..adapters.diffusers import load_diffusers, sample_diffusers
    from ..solvers import solver_from_spec

    solver = solver_from_spec(args.solver)
    result = sample_diffusers(
        load_diffusers(args.diffusers),
        solver,
        args.steps,
        seeds,
        grid=args.grid or "karras",
        progress=not args.no_progress,
    )
    path = save_image_grid(result.x, args.out)
    print(
        f"{len(seeds)} samples, {solver.describe()}, {result.num_steps} steps, {result.nfe} NFE, "
        f"{result.wall_seconds:.1f} s; wrote {path}"
    )
    return 0


def _sample_checkpoint(args, seeds: list[int]) -> int:
    from ..distributed import init_from_env, rank
    from ..experiments.image_eval import default_grid, sample_checkpoint
    from ..imaging import save_image_grid

    init_from_env()
    model, meta = load_image_model(args.checkpoint, args.config)
    start = time.perf_counter()
    x, nfe = sample_checkpoint(
        model,
        meta,
        args.solver,
        args.steps,
        seeds,
        grid=args.grid,
        class_label=args.class_label,
        guidance=args.cfg,
        progress=not args.no_progress,
        name=str(args.checkpoint),
    )
    if rank() != 0:
        return 0
    path = save_image_grid(x, args.out, scale=max(1, 32 // meta["shape"][-1]))
    print(
        f"{len(seeds)} samples, {args.solver}, {args.steps} steps on the {args.grid or default_grid(meta)} grid, {nfe} NFE, "
        f"guidance {args.cfg:g}, "
        f"{time.perf_counter() - start:.1f} s; wrote {path}"
    )
    return 0
