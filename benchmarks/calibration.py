"""Calibrated few-step samplers against the best uncalibrated one, on the exact analytic problems.

For each problem and NFE budget: the best uncalibrated sampler (every solver in ``--baseline-solvers`` on every
built-in grid of ``calibration.BASELINE_GRIDS``, chosen on validation seeds) and, for each calibration method,
the best calibrated sampler over ``--solvers``; both on the same held-out test seeds, with the trajectory
error (RMS to the teacher's end points), the distribution errors (sliced W2 to the teacher's samples, NLL gap
to exact samples: < 0 over-concentrated, > 0 under-) and the calibration's wall time, in one run.

    python benchmarks/calibration.py [--problems ring,gmm64 --nfe 4,5,6,8,10 --threads 1]
"""

from __future__ import annotations

import argparse
import time

import torch

from samplerlab.calibration import CalibrationMethod, SeedSplit, Target, best_builtin_grid, calibrate, solve_teacher
from samplerlab.calibration.learn import run_sampler, score
from samplerlab.metrics.analytic import nll_gap
from samplerlab.problems import make_problem
from samplerlab.processes import EDM
from samplerlab.solvers import solver_from_spec

BASELINE_SOLVERS = ("euler", "heun", "dpm-solver++", "dpm-solver++:order=3", "unipc", "unipc:order=3", "ipndm", "lms")
CALIBRATED_SOLVERS = ("ipndm", "unipc", "dpm-solver++")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--problems", default="ring,gmm64")
    p.add_argument("--nfe", default="4,5,6,8,10")
    p.add_argument("--solvers", default=",".join(CALIBRATED_SOLVERS), help="solvers to calibrate")
    p.add_argument("--baseline-solvers", default=",".join(BASELINE_SOLVERS))
    p.add_argument("--max-evaluations", type=int, default=1500)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    seeds = SeedSplit()
    for name in args.problems.split(","):
        problem = make_problem(name)
        target = Target(problem.model, EDM(), (problem.dim,))
        start = time.perf_counter()
        teachers = tuple(solve_teacher(target, s) for s in (seeds.fit, seeds.validation, seeds.test))
        truth = problem.model.sample(len(seeds.test), torch.Generator().manual_seed(1))
        print(
            f"\n== {name}: {problem.description}; fit / validation / test seeds "
            f"{len(seeds.fit)} / {len(seeds.validation)} / {len(seeds.test)}; teacher "
            f"{time.perf_counter() - start:.1f} s =="
        )
        print(f"{'NFE':>4}  {'sampler':<56} {'RMS':>8} {'ratio':>6} {'SW2':>8} {'NLL gap':>8} {'time':>7}")
        for nfe in [int(v) for v in args.nfe.split(",")]:
            best = None
            for spec in args.baseline_solvers.split(","):
                solver = solver_from_spec(spec)
                steps = solver.steps_for_nfe(nfe)
                if steps is None:
                    continue
                label, grid, val = best_builtin_grid(target, solver, steps, teachers[1])
                if best is None or val.rms < best[0].rms:
                    best = (val, spec, solver, label, grid)
            _, spec, solver, label, grid = best
            samples = run_sampler(target, teachers[2], solver, grid)
            base = score(samples, teachers[2])
            gap = nll_gap(problem.model, samples, truth)
            print(
                f"{nfe:>4}  {'best built-in: ' + spec + ' / ' + label:<56} {base.rms:>8.4f} {1:>6.2f} "
                f"{base.sw2:>8.4f} {gap:>+8.2f} {'':>7}"
            )
            for method in CalibrationMethod:
                results = []
                for cal_spec in args.solvers.split(","):
                    solver = solver_from_spec(cal_spec)
                    steps = solver.steps_for_nfe(nfe)
                    if steps is None or steps < 2:
                        continue
                    if method is CalibrationMethod.GRID_SHIFT_COEFFICIENTS and not hasattr(solver, "coefficients"):
                        continue  # no coefficients to fit
                    # the coefficient stage comes on top of the two others, with a budget of its own
                    extra = 1.5 if method is CalibrationMethod.GRID_SHIFT_COEFFICIENTS else 1.0
                    _, report = calibrate(
                        target,
                        solver,
                        nfe,
                        method=method,
                        seeds=seeds,
                        teachers=teachers,
                        max_evaluations=int(args.max_evaluations * extra),
                    )
                    results.append((report.calibrated_test.rms, cal_spec, report))
                if not results:
                    continue
                _, cal_spec, r = min(results, key=lambda t: t[0])
                seconds = sum(t[2].seconds for t in results) / len(results)
                flag = " (!)" if r.calibrated_test.sw2 > 1.1 * base.sw2 else ""
                print(
                    f"{'':>4}  {'calibrated ' + method.value + ': ' + cal_spec:<56} {r.calibrated_test.rms:>8.4f} "
                    f"{r.calibrated_test.rms / base.rms:>6.2f} {r.calibrated_test.sw2:>8.4f}{flag} "
                    f"{r.nll_gap_calibrated:>+8.2f} {seconds:>6.1f}s"
                )
    print(
        "\nratio: RMS against the best built-in sampler's on the same test seeds; time: mean wall time of one "
        "calibration (teacher solves excluded); (!): sliced W2 more than 10 % above the best built-in's; "
        "grid+shift+coefficients: DPM-Solver++ only, with 1.5x the runs"
    )


if __name__ == "__main__":
    main()
