"""``samplerlab calibrate``: fit a solver's time grid (and model levels) to a model at an NFE budget and write it
as a grid file that ``--grid FILE.json`` takes wherever a grid is asked for."""

from __future__ import annotations

from pathlib import Path

from .common import (
    CHECKPOINT_HELP,
    add_no_progress,
    add_published_config_arg,
    image_file,
    json_file,
    load_image_model,
    positive_int,
)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "calibrate", help="fit a few-step sampler's grid to a model; write it as a grid file", description=__doc__
    )
    p.add_argument("--problem", default="gmm64", help="analytic problem (default: gmm64)")
    p.add_argument("--checkpoint", help="calibrate an image model instead of a problem: " + CHECKPOINT_HELP)
    add_published_config_arg(p)
    p.add_argument("--process", help="process (default: the checkpoint's, else edm)")
    p.add_argument("--solver", default="ipndm", help="deterministic solver spec (default: ipndm)")
    p.add_argument("--nfe", type=positive_int, default=5, help="NFE budget (default: 5)")
    p.add_argument(
        "--method",
        default="grid+shift",
        help="grid | grid+shift | grid+shift+coefficients (DPM-Solver++ 2M) | dp (default: grid+shift)",
    )
    p.add_argument("--fit-samples", type=positive_int, default=256, help="calibration seeds (default: 256)")
    p.add_argument("--test-samples", type=positive_int, default=1000, help="held-out test seeds (default: 1000)")
    p.add_argument(
        "--max-evaluations", type=positive_int, default=1500, help="sampler runs of the fit at most (default: 1500)"
    )
    p.add_argument("--plot", type=image_file, help="also draw the grid against the built-in ones (a .png/.pdf/.svg)")
    p.add_argument("--out", type=json_file, help="grid file to write (default: grids/MODEL-SOLVER-nfeN.json)")
    add_no_progress(p)
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from ..calibration import CalibrationMethod, SeedSplit, Target, calibrate
    from ..processes import make_process
    from ..solvers import solver_from_spec

    solver = solver_from_spec(args.solver)
    method = CalibrationMethod.parse(args.method)
    solver.steps_within(args.nfe, label=args.solver)
    process = make_process(args.process) if args.process else None  # a bad name fails before any loading
    if args.checkpoint:
        from ..experiments.image_eval import model_process

        model, meta = load_image_model(args.checkpoint, args.config)
        process = process or model_process(meta)
        cond = None
        if meta.get("num_classes"):  # one class per seed, as samplerlab eval draws them
            from ..experiments.image_eval import random_labels

            def cond(seeds, classes=meta["num_classes"]):
                return {"class_labels": random_labels(list(seeds), classes)}

        from ..experiments.image_eval import sampling_range

        lo, hi = sampling_range(meta)  # as sample and eval sample it
        lo, hi = max(lo, process.sigma_min), min(hi, process.sigma_max)
        target = Target(
            model, process, tuple(meta["shape"]), dtype=torch.float32, cond=cond, sigma_min=lo, sigma_max=hi
        )
        label = Path(args.checkpoint).stem
    else:
        from ..problems import make_problem

        process = process or make_process("edm")
        problem = make_problem(args.problem)
        target = Target(problem.model, process, (problem.dim,))
        label = args.problem
    out = Path(args.out or f"grids/{label}-{solver.name}-nfe{args.nfe}.json")
    seeds = SeedSplit(
        range(0, args.fit_samples),
        range(10**6, 10**6 + args.fit_samples),
        range(2 * 10**6, 2 * 10**6 + args.test_samples),
    )
    state = out.with_name(f".{out.name}.state")  # the fit so far: rerun the same command to resume
    out.parent.mkdir(parents=True, exist_ok=True)
    grid_file, report = calibrate(
        target,
        solver,
        args.nfe,
        method=method,
        seeds=seeds,
        max_evaluations=args.max_evaluations,
        state_path=state,
        progress=not args.no_progress,
    )
    grid_file.write(out)
    for done in out.parent.glob(f".{out.name}.state*"):  # the fit's resumable state, no longer needed
        done.unlink(missing_ok=True)
    print("\n".join(report.lines()))
    print("sigmas:       " + ", ".join(f"{s:.4g}" for s in grid_file.sigmas))
    if grid_file.model_sigmas is not None:
        print("model sigmas: " + ", ".join(f"{s:.4g}" for s in grid_file.model_sigmas))
    print(f"{report.evaluations} sampler runs, {report.seconds:.0f} s; wrote {out}")
    if args.plot:
        from ..calibration.calibrate import baseline_grid
        from ..calibration.plot import plot_grids

        steps = grid_file.num_steps
        grids = {f"calibrated ({method.value})": grid_file.sigmas}
        for name in ("karras", "logsnr") + (("flow",) if process.name == "rectified-flow" else ()):
            grids[name] = baseline_grid(name, {}, steps, target)
        shifted = {next(iter(grids)): grid_file.model_sigmas} if grid_file.model_sigmas else None
        title = f"{label}: {args.solver} at {report.nfe} NFE ({method.value})"
        print(f"wrote {plot_grids(grids, args.plot, title, shifted)}")
    print(f"use it with --grid {out} (solver {solver.describe()}, {report.nfe} NFE)")
    return 0
