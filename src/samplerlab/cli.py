"""Command line: ``samplerlab bench`` and ``samplerlab list``.

Strings become objects here, once, through the registries; a bad name gets an
error listing the valid ones.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .registry import UnknownNameError
from .solvers.base import parse_value

__all__ = ["main"]


def _csv_list(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def _int_list(text: str) -> list[int]:
    try:
        return [int(p) for p in _csv_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _float_list(text: str) -> list[float]:
    try:
        return [float(p) for p in _csv_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _key_values(items: list[str], what: str) -> dict:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"{what} must look like KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip().replace("-", "_")] = parse_value(v.strip())
    return out


def _solver_params(items: list[str]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for item in items or []:
        target, eq, value = item.partition("=")
        spec, dot, key = target.rpartition(".")
        if not eq or not dot or not spec or not key:
            raise ValueError(f"--solver-param must look like SOLVER.KEY=VALUE (e.g. ddim.eta=0.5), got {item!r}")
        out.setdefault(spec, {})[key.strip().replace("-", "_")] = parse_value(value.strip())
    return out


def _cmd_bench(args) -> int:
    from .experiments.bench import BenchConfig, run_bench
    from .experiments.report import format_bench, write_bench_outputs

    config = BenchConfig()
    if args.problems:
        config.problems = _csv_list(args.problems)
    if args.solvers:
        config.solvers = _csv_list(args.solvers)
    if args.nfe:
        config.nfes = args.nfe
    config.grid = args.grid
    config.grid_params = _key_values(args.grid_param, "--grid-param")
    config.process = args.process
    config.process_params = _key_values(args.process_param, "--process-param")
    config.solver_params = _solver_params(args.solver_param)
    if args.tolerances:
        config.adaptive_tolerances = args.tolerances
    config.num_samples = args.samples
    config.seed = args.seed
    config.dtype = args.dtype
    config.validate()

    solvers = [config.solver(spec) for spec in config.solvers]
    per_problem = sum(len(config.tolerances(s)) if s.adaptive else len(config.nfes) for s in solvers)
    total = len(config.problems) * per_problem
    bar = None
    if not args.no_progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="bench", unit="cell", file=sys.stderr)
    start = time.perf_counter()
    summaries, rows = run_bench(config, progress=(lambda label: (bar.set_postfix_str(label), bar.update(1))) if bar else None)
    if bar:
        bar.close()
    table = format_bench(config, summaries, rows)
    print(table, end="")
    print(f"total {time.perf_counter() - start:.1f} s")
    if args.out:
        for path in write_bench_outputs(args.out, config, summaries, rows, table):
            print(f"wrote {path}")
    return 0


def _init_distributed() -> None:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1): gloo on CPU, NCCL on GPU."""
    import os

    import torch
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")


def _cmd_run(args) -> int:
    from .experiments.runner import load_experiment, run_experiment

    config = load_experiment(args.experiment)
    out = args.out or str(Path("runs") / config.name)
    _init_distributed()
    summary = run_experiment(config, out, progress=not args.no_progress)
    if not summary["files"]:  # a non-zero rank of a sharded run
        return 0
    print((Path(out) / "tables.md").read_text())
    print(f"{summary['computed']} cells computed, {summary['reused']} reused from {Path(out) / 'results.jsonl'}")
    for path in summary["files"]:
        print(f"wrote {path}")
    return 0


def _cmd_schedules_plot(args) -> int:
    from .experiments.tables import plot_schedules
    from .grids import time_steps
    from .schedules import make_process
    from .sigma_curves import ScheduledProcess

    base = make_process(args.process)
    entries = []
    for shape in _csv_list(args.shapes):
        for alpha in args.steepness or [1.0]:
            process = base if shape == "base" and alpha == 1.0 else ScheduledProcess.swap(
                base, base.name if shape == "base" else shape, alpha)
            grid = time_steps(args.steps, process, offset=args.offset, power=args.power).tolist() if args.steps else None
            label = shape + ("" if alpha == 1.0 else f", steepness {alpha:g}")
            entries.append((label, process, grid))
    plot_schedules(entries, args.out, title=f"schedules on the {base.name} process's range")
    print(f"wrote {args.out}")
    return 0


def _cmd_optimise_steps(args) -> int:
    from .experiments.step_optimisation import optimise_steps, save_grid
    from .problems import make_problem
    from .schedules import make_process
    from .solvers import solver_from_spec

    problem = make_problem(args.problem)
    process = make_process(args.process)
    solver = solver_from_spec(args.solver)
    steps = solver.steps_for_nfe(args.nfe)
    if steps is None:
        raise ValueError(f"{args.solver} cannot run within {args.nfe} NFE")
    grid = optimise_steps(problem.model, solver, steps, process, problem.dim,
                          num_candidates=args.candidates, calibration=args.calibration, seed=args.seed)
    name = args.name or f"{args.problem}-{solver.name}-nfe{args.nfe}"
    path = save_grid(name, grid, {"problem": args.problem, "process": args.process, "nfe": args.nfe}, args.grid_dir)
    print(f"{solver.describe()} at {steps} steps: summed local error {grid.cost:.3e}")
    print("sigmas: " + ", ".join(f"{s:.4g}" for s in grid.sigmas))
    print(f"wrote {path}; use it with --grid saved --grid-param name={name}")
    return 0


def _cmd_likelihood(args) -> int:
    import torch

    from .metrics.likelihood import bits_per_dim, ode_log_likelihood
    from .problems import make_problem

    problem = make_problem(args.problem)
    x = problem.model.sample(args.samples, torch.Generator().manual_seed(args.seed))
    result = ode_log_likelihood(problem.model, x, sigma_max=args.sigma_max, divergence=args.divergence,
                                probes=args.probes, rtol=args.rtol, atol=args.rtol, seed=args.seed)
    exact = -problem.model.log_prob(x).mean().item()
    print(f"{problem.name}: {args.samples} exact samples, divergence {args.divergence}, {result.nfe} NFE")
    print(f"NLL  {result.nll:.4f} ± {result.nll_std_error:.4f} nats (standard error over samples); "
          f"closed form {exact:.4f}")
    print(f"     {bits_per_dim(result.nll, problem.dim, eight_bit=False):.4f} bits/dim (continuous data)")
    return 0


def _cmd_sample(args) -> int:
    import torch

    from .grids import make_grid
    from .imaging import save_image_grid
    from .noise import SampleNoise, parse_seeds
    from .sampling import sample
    from .schedules import VPLinear
    from .solvers import solver_from_spec

    if not args.diffusers:
        raise ValueError("give a model: --diffusers DIR (a local diffusers UNet2DModel or pipeline folder)")
    from .adapters.diffusers import load_diffusers, timestep_grid

    model = load_diffusers(args.diffusers)
    solver = solver_from_spec(args.solver)
    seeds = parse_seeds(args.seeds)
    process = VPLinear()  # the state is in VP coordinates; every VP process has s = 1 / sqrt(1 + sigma^2)
    if args.grid.startswith("diffusers-"):
        grid = timestep_grid(model, args.steps, args.grid.removeprefix("diffusers-"))
    else:
        grid = make_grid(args.grid, args.steps, process, sigma_min=model.denoiser.sigma_min,
                         sigma_max=model.denoiser.sigma_max)
    noise = SampleNoise(seeds, dtype=torch.float32)
    x_T = noise.randn(*model.sample_shape)  # diffusers' prior: N(0, I) in VP coordinates
    result = sample(model, x_T, grid, solver, process=process, noise=noise if solver.stochastic else None,
                    progress=not args.no_progress)
    path = save_image_grid(result.x, args.out)
    print(f"{len(seeds)} samples, {solver.describe()}, {result.num_steps} steps, {result.nfe} NFE, "
          f"{result.wall_seconds:.1f} s; wrote {path}")
    return 0


def _cmd_train(args) -> int:
    from .data import TOYS, make_toy
    from .training import TrainConfig, train

    if args.data not in TOYS:
        raise ValueError(f"samplerlab train handles the 2-D toys for now ({', '.join(TOYS.names())}); got {args.data!r}")
    data = make_toy(args.data, args.samples, seed=args.seed)
    config = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                         sigma_data=float(data.std()), hidden=args.hidden, depth=args.depth)
    out = Path(args.out or f"runs/train-{args.data}")
    _, meta = train(data, config, out, progress=not args.no_progress)
    tail = meta["losses"][-100:]
    print(f"trained to step {meta['step']}: loss {sum(tail) / len(tail):.4f} (mean of the last {len(tail)}); "
          f"checkpoint in {out} (safetensors + JSON; re-running resumes)")
    return 0


def _cmd_list(args) -> int:
    from .grids import GRIDS
    from .problems import PROBLEMS
    from .schedules import PROCESSES
    from .solvers import SOLVERS

    for title, reg in (("solvers", SOLVERS), ("grids", GRIDS), ("processes", PROCESSES), ("problems", PROBLEMS)):
        print(f"{title}:")
        for name in reg.names():
            obj = reg.get(name)
            doc = (obj.__doc__ or "").strip().splitlines()
            print(f"  {name:18s} {doc[0] if doc else ''}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="samplerlab", description="Samplers for diffusion models, measured.")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: $SAMPLERLAB_THREADS or 1; more oversubscribes 2-core machines)")
    sub = parser.add_subparsers(dest="command", required=True)

    bench = sub.add_parser("bench", help="exact-score benchmark of solvers x NFE on analytic problems",
                           description="Runs every solver at every NFE budget on exact Gaussian-mixture problems "
                                       "and prints quality tables. Defaults take about a minute on 2 cores.")
    bench.add_argument("--problems", help="comma-separated problems (default: ring,gmm64; see `samplerlab list`)")
    bench.add_argument("--solvers", help="comma-separated solver specs NAME or NAME:KEY=VALUE:..., e.g. "
                       "heun,dpm-solver++:order=3,unipc:variant=bh1 (default: one per solver family)")
    bench.add_argument("--nfe", type=_int_list, help="comma-separated NFE budgets (default: 5,10,20,50)")
    bench.add_argument("--grid", default="karras", help="time grid (default: karras)")
    bench.add_argument("--grid-param", action="append", metavar="KEY=VALUE", help="grid parameter, e.g. rho=7")
    bench.add_argument("--process", default="edm", help="noise process (default: edm)")
    bench.add_argument("--process-param", action="append", metavar="KEY=VALUE", help="process parameter, e.g. t_max=80")
    bench.add_argument("--solver-param", action="append", metavar="SOLVER.KEY=VALUE",
                       help="solver parameter, e.g. ddim.eta=0.5 or edm-stochastic.s_churn=10")
    bench.add_argument("--tolerances", type=_float_list, help="tolerances for adaptive solvers (default: dopri5 rtol 0.1,0.01,0.001; ggf reltol 0.1,0.05,0.02)")
    bench.add_argument("--samples", type=int, default=None, help="samples per problem (default: per problem)")
    bench.add_argument("--seed", type=int, default=0, help="first seed; samples use seed, seed+1, ...")
    bench.add_argument("--dtype", default="float32", help="float32 or float64 (default: float32)")
    bench.add_argument("--out", help="folder for results.csv, results.json, table.txt and quality_vs_nfe.png")
    bench.add_argument("--no-progress", action="store_true", help="no progress bar")
    bench.set_defaults(func=_cmd_bench)

    run = sub.add_parser("run", help="run an experiment file (solver x schedule x transform x steps), resumable")
    run.add_argument("experiment", help="TOML file, e.g. examples/sgmse_schedule_study.toml")
    run.add_argument("--out", help="run folder (default: runs/NAME); re-running resumes it")
    run.add_argument("--no-progress", action="store_true")
    run.set_defaults(func=_cmd_run)

    sched = sub.add_parser("schedules", help="schedule tools")
    sched_sub = sched.add_subparsers(dest="schedules_command", required=True)
    plot = sched_sub.add_parser("plot", help="draw sigma(t) of schedules (and their steps) to a PNG")
    plot.add_argument("--shapes", default="base,linear,subvp,ve,vp,edm",
                      help="comma-separated shapes; 'base' is the process's own (default: all)")
    plot.add_argument("--process", default="ouve", help="whose range and time the shapes take (default: ouve)")
    plot.add_argument("--steepness", type=_float_list, help="steepness exponents to draw, e.g. 1,1.2,1.5")
    plot.add_argument("--steps", type=int, default=0, help="also mark N time steps")
    plot.add_argument("--offset", type=float, default=1.0, help="timestep offset alpha for the marked steps")
    plot.add_argument("--power", type=float, default=1.0, help="power warp of the marked steps")
    plot.add_argument("--out", default="schedules.png")
    plot.set_defaults(func=_cmd_schedules_plot)

    opt = sub.add_parser("optimise-steps", help="choose a solver's steps by dynamic programming and save them")
    opt.add_argument("--problem", default="ring", help="analytic problem (default: ring)")
    opt.add_argument("--process", default="edm")
    opt.add_argument("--solver", default="heun", help="solver spec (default: heun)")
    opt.add_argument("--nfe", type=int, default=10, help="NFE budget (default: 10)")
    opt.add_argument("--candidates", type=int, default=48, help="candidate levels (Karras rho 7, default: 48)")
    opt.add_argument("--calibration", type=int, default=256, help="calibration samples (default: 256)")
    opt.add_argument("--seed", type=int, default=0)
    opt.add_argument("--name", help="saved grid name (default: PROBLEM-SOLVER-nfeN)")
    opt.add_argument("--grid-dir", help="folder for saved grids (default: $SAMPLERLAB_GRID_DIR or ./grids)")
    opt.set_defaults(func=_cmd_optimise_steps)

    like = sub.add_parser("likelihood", help="negative log-likelihood through the probability-flow ODE")
    like.add_argument("--problem", default="ring", help="analytic problem (default: ring)")
    like.add_argument("--samples", type=int, default=256)
    like.add_argument("--divergence", default="exact", choices=["exact", "hutchinson-rademacher", "hutchinson-gaussian"])
    like.add_argument("--probes", type=int, default=1, help="Hutchinson probes per sample")
    like.add_argument("--sigma-max", type=float, default=80.0)
    like.add_argument("--rtol", type=float, default=1e-5)
    like.add_argument("--seed", type=int, default=0)
    like.set_defaults(func=_cmd_likelihood)

    samp = sub.add_parser("sample", help="sample a model to a PNG grid")
    samp.add_argument("--diffusers", help="local diffusers UNet2DModel or pipeline folder (needs samplerlab[diffusers])")
    samp.add_argument("--solver", default="dpm-solver++", help="solver spec (default: dpm-solver++)")
    samp.add_argument("--steps", type=int, default=20)
    samp.add_argument("--grid", default="karras",
                      help="karras, exponential, logsnr, ... on the model's sigma range, or diffusers-leading / "
                           "diffusers-linspace / diffusers-trailing for diffusers' own timesteps")
    samp.add_argument("--seeds", default="0-15", help="e.g. 0-63 or 1,5,9")
    samp.add_argument("--out", default="samples.png")
    samp.add_argument("--no-progress", action="store_true")
    samp.set_defaults(func=_cmd_sample)

    tr = sub.add_parser("train", help="train an EDM model (MLP) on a 2-D toy; resumable")
    tr.add_argument("--data", default="moons", help="ring, moons, swissroll or checkerboard (default: moons)")
    tr.add_argument("--samples", type=int, default=20000)
    tr.add_argument("--steps", type=int, default=3000)
    tr.add_argument("--batch-size", type=int, default=256)
    tr.add_argument("--lr", type=float, default=2e-3)
    tr.add_argument("--hidden", type=int, default=128)
    tr.add_argument("--depth", type=int, default=3)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--out", help="checkpoint folder (default: runs/train-DATA)")
    tr.add_argument("--no-progress", action="store_true")
    tr.set_defaults(func=_cmd_train)

    lister = sub.add_parser("list", help="list solvers, grids, processes and problems")
    lister.set_defaults(func=_cmd_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .runtime import configure_threads

    try:
        configure_threads(args.threads)
        return args.func(args)
    except (UnknownNameError, ValueError) as err:
        print(f"samplerlab: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
