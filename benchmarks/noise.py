"""What reproducible noise costs a stochastic sampler, against the non-reproducible lower bound.

For Euler ancestral, SDE-DPM-Solver++(2M), the EDM stochastic sampler and Euler-Maruyama on the exact
ring (4000 samples) and gmm64 (1000 samples) models at NFE 10, prints the wall time of ``sample()`` with
samplerlab's per-sample Philox streams (a sample depends on its seed alone) and with one plain batched
``torch.randn`` per draw (what a sampler without that promise pays), and their ratio, all in one run.
"""

from __future__ import annotations

import argparse

import torch

from samplerlab.grids import karras
from samplerlab.noise import SampleNoise
from samplerlab.problems import make_problem
from samplerlab.processes import EDM
from samplerlab.sampling import prior_sample, sample
from samplerlab.solvers import solver_from_spec
from timing import best_of_interleaved  # benchmarks/timing.py

SOLVERS = ("euler-ancestral", "sde-dpm-solver++", "edm-stochastic", "euler-maruyama")
PROBLEMS = (("ring", 4000), ("gmm64", 1000))


class PlainNoise:
    """One batched torch.randn per draw: fast, but a sample then depends on its batch."""

    def __init__(self, batch: int, dtype: torch.dtype, seed: int = 0):
        self.batch, self.dtype = batch, dtype
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return self.batch

    def randn(self, *shape: int) -> torch.Tensor:
        return torch.randn(self.batch, *shape, generator=self.generator, dtype=self.dtype)

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        return torch.randn(x.shape, generator=self.generator, dtype=x.dtype)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nfe", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    process = EDM()
    print(f"NFE {args.nfe}, float32, {args.threads} thread(s), best of {args.repeats}")
    print(f"{'problem':8s} {'solver':18s} {'plain randn ms':>15s} {'samplerlab ms':>14s} {'ratio':>6s}")
    for name, batch in PROBLEMS:
        model = make_problem(name).model.to(torch.float32)
        dim = model.dim
        for spec in SOLVERS:
            solver = solver_from_spec(spec)
            grid = karras(solver.steps_within(args.nfe), process)
            x_T = prior_sample(process, float(grid[0]), SampleNoise(range(batch)), (dim,))

            def plain():
                sample(model, x_T, grid, solver, process=process, noise=PlainNoise(batch, torch.float32))

            def reproducible():
                sample(model, x_T, grid, solver, process=process, noise=SampleNoise(range(batch)))

            base, lab = (t * 1e3 for t in best_of_interleaved([plain, reproducible], args.repeats))
            print(f"{name:8s} {spec:18s} {base:15.2f} {lab:14.2f} {lab / base:6.2f}")


if __name__ == "__main__":
    main()
