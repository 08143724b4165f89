"""Per-step overhead of samplerlab's loop and solvers, model time excluded, on a cheap exact model.

Prints microseconds per step for:
  baseline-euler     a bare Euler loop in sigma calling the model directly
  samplerlab-euler   sample() with the Euler solver (process lookups, NFE counter, callbacks off)
  baseline-noise     one batched torch.randn per step
  samplerlab-noise   per-sample seeded streams (what makes a sample independent of its batch)
then, for every multistep and exponential solver, its bookkeeping per model call (wall time minus model
time, over the counted NFE) and the ratio to Euler's, measured in the same run. A solver's per-step
weights are computed once per grid (``solvers.base.grid_plan``), so the best of several runs shows the
steady state of sampling many batches on one grid.
"""

from __future__ import annotations

import argparse

import torch

from samplerlab.grids import karras
from samplerlab.noise import SampleNoise
from samplerlab.problems import make_problem
from samplerlab.processes import EDM, VPLinear
from samplerlab.sampling import prior_sample, sample
from samplerlab.solvers import make_solver, solver_from_spec
from timing import best_of  # benchmarks/timing.py

MULTISTEP = (
    "euler",
    "dpm-solver++",
    "dpm-solver++:order=3",
    "dpm-solver:multistep=true:order=3",
    "deis-tab",
    "deis-rhoab",
    "lms",
    "ipndm",
    "unipc",
    "unipc:order=3",
)


def overheads(problem: str, batch: int, steps: int, repeats: int, process) -> list[tuple[str, float]]:
    """(spec, microseconds outside the model per counted NFE), the best of ``repeats`` runs of each solver,
    the solvers taken in turn in every round so that a slow spell of the machine falls on all alike."""
    model = make_problem(problem).model.to(torch.float32)
    grid = karras(steps, process)
    x_T = prior_sample(process, float(grid[0]), SampleNoise(range(batch)), (model.dim,))
    solvers = [solver_from_spec(spec) for spec in MULTISTEP]
    best = dict.fromkeys(MULTISTEP, float("inf"))
    for _ in range(repeats):
        for spec, solver in zip(MULTISTEP, solvers):
            noise = SampleNoise(range(batch)) if solver.stochastic else None
            r = sample(model, x_T, grid, solver, process=process, noise=noise)
            best[spec] = min(best[spec], (r.wall_seconds - r.model_seconds) / r.nfe)
    return [(spec, best[spec] * 1e6) for spec in MULTISTEP]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    model = make_problem("ring").model.to(torch.float32)
    process = EDM()
    grid = karras(args.steps, process)
    noise = SampleNoise(range(args.batch))
    x_T = prior_sample(process, float(grid[0]), noise, (2,))
    sigmas = grid.tolist()

    def baseline_euler():
        x = x_T
        with torch.no_grad():
            for s, s_next in zip(sigmas[:-1], sigmas[1:]):
                x = x + (s_next - s) * (x - model(x, torch.tensor(s))) / s
        return x

    def lab_euler():
        return sample(model, x_T, grid, make_solver("euler"), process=process).x

    assert torch.allclose(baseline_euler(), lab_euler(), atol=1e-4), "the two loops must compute the same thing"

    def baseline_noise():
        g = torch.Generator().manual_seed(0)
        for _ in range(args.steps):
            torch.randn(args.batch, 2, generator=g)

    def lab_noise():
        n = SampleNoise(range(args.batch))
        n.plan(args.steps)  # as sample() does
        for _ in range(args.steps):
            n.randn(2)

    rows = []
    for name, fn in (("euler", (baseline_euler, lab_euler)), ("noise", (baseline_noise, lab_noise))):
        base = best_of(fn[0], args.repeats) / args.steps * 1e6
        lab = best_of(fn[1], args.repeats) / args.steps * 1e6
        rows.append((name, base, lab))
    print(f"batch {args.batch}, {args.steps} steps, {args.threads} thread(s); best of {args.repeats}")
    print(f"{'what':8s} {'baseline us/step':>18s} {'samplerlab us/step':>20s} {'ratio':>7s}")
    for name, base, lab in rows:
        print(f"{name:8s} {base:18.1f} {lab:20.1f} {lab / base:7.2f}")

    for problem, proc in (("gmm64", EDM()), ("gmm64", VPLinear())):
        result = overheads(problem, args.batch, min(args.steps, 50), args.repeats, proc)
        euler = dict(result)["euler"]
        print(
            f"\nsolver bookkeeping on {problem} ({proc.name} process, {args.batch} samples, "
            f"{min(args.steps, 50)} steps), model time excluded"
        )
        print(f"{'solver':36s} {'us per NFE':>11s} {'/ Euler':>8s}")
        for spec, us in result:
            print(f"{spec:36s} {us:11.1f} {us / euler:8.2f}")


if __name__ == "__main__":
    main()
