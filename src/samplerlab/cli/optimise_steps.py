"""``samplerlab optimise-steps``: a solver's steps chosen by dynamic programming, saved as a grid."""

from __future__ import annotations

from .common import nonnegative_int, positive_int


def add_parser(sub) -> None:
    p = sub.add_parser("optimise-steps", help="choose a solver's steps by dynamic programming and save them")
    p.add_argument("--problem", default="ring", help="analytic problem (default: ring)")
    p.add_argument("--process", default="edm")
    p.add_argument("--solver", default="heun", help="solver spec (default: heun)")
    p.add_argument("--nfe", type=positive_int, default=10, help="NFE budget (default: 10)")
    p.add_argument("--candidates", type=positive_int, default=48, help="candidate levels (Karras rho 7, default: 48)")
    p.add_argument("--calibration", type=positive_int, default=256, help="calibration samples (default: 256)")
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.add_argument("--name", help="saved grid name (default: PROBLEM-SOLVER-nfeN)")
    p.add_argument("--grid-dir", help="folder for saved grids (default: $SAMPLERLAB_GRID_DIR or ./grids)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..experiments.step_optimisation import optimise_steps, save_grid
    from ..problems import make_problem
    from ..processes import make_process
    from ..solvers import solver_from_spec

    problem = make_problem(args.problem)
    process = make_process(args.process)
    solver = solver_from_spec(args.solver)
    steps = solver.steps_within(args.nfe, label=args.solver)
    grid = optimise_steps(
        problem.model,
        solver,
        steps,
        process,
        problem.dim,
        num_candidates=args.candidates,
        calibration=args.calibration,
        seed=args.seed,
    )
    name = args.name or f"{args.problem}-{solver.name}-nfe{args.nfe}"
    path = save_grid(name, grid, {"problem": args.problem, "process": args.process, "nfe": args.nfe}, args.grid_dir)
    print(f"{solver.describe()} at {steps} steps: summed local error {grid.cost:.3e}")
    print("sigmas: " + ", ".join(f"{s:.4g}" for s in grid.sigmas))
    print(f"wrote {path}; use it with --grid saved --grid-param name={name}")
    return 0
