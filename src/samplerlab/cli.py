"""Command line: ``samplerlab bench`` and ``samplerlab list``.

Strings become objects here, once, through the registries; a bad name gets an
error listing the valid ones.
"""

from __future__ import annotations

import argparse
import sys
import time

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
