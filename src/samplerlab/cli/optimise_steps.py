"""``samplerlab optimise-steps``: a solver's steps chosen by dynamic programming over candidate levels, scored by
the solver's own steps with their history (``calibration.dp``), saved as a grid file."""

from __future__ import annotations

from .common import add_no_progress, nonnegative_int, positive_int


def add_parser(sub) -> None:
    p = sub.add_parser("optimise-steps", help="choose a solver's steps by dynamic programming and save them")
    p.add_argument("--problem", default="ring", help="analytic problem (default: ring)")
    p.add_argument("--process", default="edm")
    p.add_argument("--solver", default="heun", help="solver spec (default: heun)")
    p.add_argument("--nfe", type=positive_int, default=10, help="NFE budget (default: 10)")
    p.add_argument("--candidates", type=positive_int, default=200, help="candidate levels (Karras rho 7, default: 200)")
    p.add_argument("--calibration", type=positive_int, default=64, help="calibration samples (default: 64)")
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.add_argument("--name", help="saved grid name (default: PROBLEM-SOLVER-nfeN)")
    p.add_argument("--grid-dir", help="folder for saved grids (default: $SAMPLERLAB_GRID_DIR or ./grids)")
    add_no_progress(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from .. import __version__
    from ..calibration import Target, fingerprint
    from ..calibration.dp import check_dp_limits, dp_evaluations, dp_grid
    from ..grids import GridFile, saved_grid_path
    from ..problems import make_problem
    from ..processes import make_process
    from ..solvers import solver_from_spec

    problem = make_problem(args.problem)
    process = make_process(args.process)
    solver = solver_from_spec(args.solver)
    steps = solver.steps_within(args.nfe, label=args.solver)
    check_dp_limits(steps, args.candidates)
    name = args.name or f"{args.problem}-{solver.name}-nfe{args.nfe}"
    path = saved_grid_path(name, args.grid_dir)
    target = Target(problem.model, process, (problem.dim,))
    bar = None
    if not args.no_progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=dp_evaluations(steps, args.candidates), desc=f"DP {solver.describe()}", unit="step")
    try:
        found = dp_grid(
            target,
            solver,
            steps,
            range(args.seed, args.seed + args.calibration),
            candidates=args.candidates,
            progress=bar,
        )
    finally:
        if bar is not None:
            bar.close()
    provenance = {
        "made_by": "samplerlab optimise-steps",
        "samplerlab_version": __version__,
        "problem": args.problem,
        "model_fingerprint": fingerprint(problem.model),
        "process": args.process,
        "solver": solver.describe(),
        "nfe": args.nfe,
        "method": "dp",
        "candidates": found.candidates,
        "history": found.history,
        "cost": found.cost,
        "seeds": f"{args.seed}-{args.seed + args.calibration - 1}",
    }
    GridFile(tuple(found.grid.tolist()), None, provenance).write(path)
    print(f"{solver.describe()} at {steps} steps: summed local error {found.cost:.3e}")
    print("sigmas: " + ", ".join(f"{s:.4g}" for s in found.grid.tolist()))
    print(f"wrote {path}; use it with --grid {path}")
    return 0
