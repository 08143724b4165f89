"""Error against model calls for adaptive Dormand-Prince (``dopri5``) at a ladder of tolerances, in both of
its variables, next to Heun on Karras grids, on an exact model (the error is the RMS distance to the exact
probability-flow ODE solution from the same noise, averaged over samples).

    python benchmarks/dopri_frontier.py [--problem gmm64 --samples 1000 --threads 1]

Where the adaptive solver's points lie above Heun's curve it costs more calls than a fixed grid for the
same error; the crossing NFE is what a "cheap adaptive baseline" can be.
"""

from __future__ import annotations

import argparse

import torch

from samplerlab.grids import karras
from samplerlab.metrics import reference_ode_solution
from samplerlab.noise import SampleNoise
from samplerlab.problems import make_problem
from samplerlab.processes import EDM
from samplerlab.sampling import sample
from samplerlab.solvers import make_solver

TOLERANCES = (1.0, 0.3, 0.1, 0.03, 0.01, 1e-3)
HEUN_STEPS = (8, 10, 15, 20, 25, 30, 35, 45, 55)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problem", default="gmm64")
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    process = EDM()
    model = make_problem(args.problem).model
    x64 = SampleNoise(range(args.samples), dtype=torch.float64).randn(model.dim) * process.sigma_max
    exact = reference_ode_solution(model, x64, process.sigma_max, 0.0)
    model32, x = model.to(torch.float32), x64.float()

    def error(result) -> float:
        return float((result.x.double() - exact).pow(2).mean(1).sqrt().mean())

    heun = []
    for steps in HEUN_STEPS:
        r = sample(model32, x, karras(steps, process), make_solver("heun"), process=process)
        heun.append((r.nfe, error(r)))

    def heun_at(nfe: int) -> float:
        """Heun's error at ``nfe``, interpolated log-log between the measured grids."""
        import math

        pts = sorted(heun)
        for (n0, e0), (n1, e1) in zip(pts, pts[1:]):
            if n0 <= nfe <= n1:
                w = math.log(nfe / n0) / math.log(n1 / n0)
                return math.exp((1 - w) * math.log(e0) + w * math.log(e1))
        return float("nan")

    print(f"{args.problem}, {args.samples} samples, EDM, float32; error = mean RMS to the exact ODE solution")
    print("\nheun (karras rho 7)\n   NFE      error")
    for nfe, err in heun:
        print(f"  {nfe:4d}   {err:.2e}")
    print(
        "\ndopri5 (atol = rtol / 10)\n  variable    rtol   NFE  accepted (mean / max)  rejected max     error   heun at NFE"
    )
    for variable in ("inv-sigma", "log-sigma"):
        for tol in TOLERANCES:
            solver = make_solver("dopri5", rtol=tol, atol=tol / 10, variable=variable)
            r = sample(model32, x, karras(2, process), solver, process=process)
            info = r.info
            print(
                f"  {variable:9s}  {tol:6g}  {r.nfe:4d}  {info['accepted_steps_mean']:9.2f} / {info['accepted_steps_max']:2d}"
                f"  {info['rejected_steps_max']:12d}   {error(r):.2e}   {heun_at(r.nfe):.2e}"
            )


if __name__ == "__main__":
    main()
