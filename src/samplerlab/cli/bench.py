"""``samplerlab bench``: the exact-score benchmark. Runs every solver at every NFE budget on exact
Gaussian-mixture problems and prints quality tables. Defaults take about a minute on 2 cores."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from .common import (
    add_no_progress,
    csv_list,
    float_list,
    key_values,
    nonnegative_int,
    output_dir,
    positive_int_list,
    sample_count,
    solver_params,
)


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="exact-score benchmark of solvers x NFE on analytic problems", description=__doc__)
    p.add_argument("--problems", help="comma-separated problems (default: ring,gmm64; see `samplerlab list`)")
    p.add_argument("--solvers", help="solver specs, e.g. heun,dpm-solver++:order=3 (default: one per family)")
    p.add_argument("--nfe", type=positive_int_list, help="comma-separated NFE budgets (default: 5,10,20,50)")
    p.add_argument("--grid", default="karras", help="time grid (default: karras)")
    p.add_argument("--grid-param", action="append", metavar="KEY=VALUE", help="grid parameter, e.g. rho=7")
    p.add_argument("--process", default="edm", help="noise process (default: edm)")
    p.add_argument("--process-param", action="append", metavar="KEY=VALUE", help="process parameter, e.g. t_max=80")
    p.add_argument(
        "--solver-param",
        action="append",
        metavar="SOLVER.KEY=VALUE",
        help="solver parameter, e.g. ddim.eta=0.5 or edm-stochastic.s_churn=10",
    )
    p.add_argument(
        "--tolerances",
        type=float_list,
        help="tolerances for adaptive solvers (default: dopri5 rtol 0.1,0.01,0.001; ggf reltol 0.1,0.05,0.02)",
    )
    p.add_argument("--samples", type=sample_count, default=None, help="samples per problem (default: per problem)")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="first seed; samples use seed, seed+1, ...")
    p.add_argument("--dtype", default="float32", help="float32 or float64 (default: float32)")
    p.add_argument(
        "--out", type=output_dir, help="folder for results.csv, results.json, table.txt and quality_vs_nfe.png"
    )
    add_no_progress(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..experiments.bench import BenchConfig

    config = BenchConfig(
        grid=args.grid,
        grid_params=key_values(args.grid_param, "--grid-param"),
        process=args.process,
        process_params=key_values(args.process_param, "--process-param"),
        solver_params=solver_params(args.solver_param),
        num_samples=args.samples,
        seed=args.seed,
        dtype=args.dtype,
    )
    if args.problems:
        config.problems = csv_list(args.problems)
    if args.solvers:
        config.solvers = csv_list(args.solvers)
    if args.nfe:
        config.nfes = args.nfe
    if args.tolerances:
        config.adaptive_tolerances = args.tolerances
    config.validate()

    out = Path(args.out) if args.out else None
    created = out is not None and not out.exists()
    try:
        return _run(args, config, out)
    except BaseException:
        # interrupted or failed before any cell finished: nothing to resume, so nothing left behind
        if created and not any(out.glob(f"{PARTIAL}/cells.jsonl")):
            shutil.rmtree(out, ignore_errors=True)
        raise


PARTIAL = ".partial"  # in --out: the finished cells of an unfinished run (a re-run resumes from them)


def _run(args, config, out: Path | None) -> int:
    from ..experiments.bench import BenchStore, run_bench
    from ..experiments.report import format_bench, write_bench_outputs

    store = BenchStore(out / PARTIAL) if out else None
    if store and store.rows:
        print(f"resuming: {len(store.rows)} finished cells in {out / PARTIAL}", file=sys.stderr)
    bar = None
    if not args.no_progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.num_cells(), desc="bench", unit="cell", file=sys.stderr)
    start = time.perf_counter()
    summaries, rows = run_bench(
        config, progress=(lambda label: (bar.set_postfix_str(label), bar.update(1))) if bar else None, store=store
    )
    if bar:
        bar.close()
    table = format_bench(config, summaries, rows)
    print(table, end="")
    print(f"total {time.perf_counter() - start:.1f} s")
    if out:
        for path in write_bench_outputs(out, config, summaries, rows, table):
            print(f"wrote {path}")
        shutil.rmtree(out / PARTIAL, ignore_errors=True)  # the outputs hold everything now
    return 0
