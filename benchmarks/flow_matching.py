"""samplerlab's samplers against diffusers' flow-matching schedulers, on the exact mixtures under rectified flow.

Every sampler starts from the same noise z (x = z at t = 1, pure noise, as a flow pipeline starts) and is scored
by its RMS distance per sample to the exact flow from there (a float64 DOP853 solve; the stretch from t = 1 to
1 - 1e-7 is the closed-form limit, x -> x + dt (x - E[x_0])), with the model calls counted:

- diffusers (the installed version, tested extra): FlowMatchEulerDiscrete, FlowMatchHeunDiscrete,
  DPMSolverMultistep (DPM-Solver++ 2M and 3M) and UniPCMultistep (orders 2 and 3) with flow sigmas on their own
  grids, at the shifts their pipelines ship (1; SD3's 3) and, as a second column, with the shift swept too
  (0.25 ... 3: "tuned"); the velocity model they call is the exact one, with its t = 1 limit;
- samplerlab, uncalibrated: every deterministic fixed-step solver on the built-in grids (flow at shift 0.5, 1, 3;
  Flux's at mu -1.5, -1, -0.5, 0; Karras at rho 5, 7; log-SNR; polyexponential) under ``RectifiedFlow`` (start
  t_max = 1 - 1e-4, x = t_max z), and log-SNR / Karras grids that start lower (sigma 5 or 20, from x = t z);
- samplerlab, calibrated: ``samplerlab.calibration.calibrate`` (grid + level shift) of the best uncalibrated
  samplerlab solver at each budget up to ``--calibrate-up-to`` (10) NFE, fitted to a teacher on its own seeds,
  from t_max and (where that sampler's grid starts lower) from its start; the better of the two on the
  selection seeds is reported.

The best configuration of each side is chosen on selection seeds and reported on disjoint test seeds, per
problem and budget; the ratios are samplerlab's error over the best diffusers scheduler's, as shipped / tuned.

    python benchmarks/flow_matching.py [--problems ring,gmm64,gauss16 --nfe 5,8,10,20 --threads 1]
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch

import samplerlab
from samplerlab.calibration import CalibrationMethod, SeedSplit, Target, calibrate
from samplerlab.denoisers import LevelShift
from samplerlab.grids import make_grid
from samplerlab.metrics import reference_ode_solution
from samplerlab.noise import SampleNoise
from samplerlab.problems import make_problem
from samplerlab.processes import RectifiedFlow
from samplerlab.sampling import sample
from samplerlab.solvers import solver_from_spec

SOLVERS = (
    "euler", "heun", "dpm-solver++", "dpm-solver++:order=3", "dpm-solver:multistep=true",
    "dpm-solver++:multistep=false", "deis-tab:order=2", "deis-tab", "deis-tab:order=4", "deis-rhoab", "lms",
    "ipndm", "unipc", "unipc:order=3", "unipc:corrector=false", "deis-rhork:tableau=heun",
)  # fmt: skip
GRIDS = (
    "flow:shift=0.5", "flow", "flow:shift=3", "flux:mu=-1.5", "flux:mu=-1", "flux:mu=-0.5", "flux:mu=0",
    "karras:rho=5", "karras", "logsnr", "polyexponential:rho=2",
    # grids that start lower, at sigma 5 or 20 (t = 0.83, 0.95) from x = t z, and end higher: a flow's first
    # stretch from pure noise is nearly straight, and few-step samplers spend their calls better below it
    "logsnr:sigma_max=5:sigma_min=0.05", "logsnr:sigma_max=20:sigma_min=0.05", "logsnr:sigma_max=20:sigma_min=0.2",
    "karras:sigma_max=20:sigma_min=0.05", "karras:rho=3:sigma_max=5:sigma_min=0.05",
)  # fmt: skip
SHIPPED_SHIFTS = (1.0, 3.0)  # diffusers' flow schedulers as the SD3 / unshifted configurations ship them
TUNED_SHIFTS = (0.25, 0.35, 0.5, 0.7, 1.0, 2.0, 3.0)
T_START = 1 - 1e-7  # the reference's exact start after the closed-form stretch from t = 1


def diffusers_schedulers(shifts) -> dict:
    """name -> a function making a fresh scheduler (flow sigmas) at each shift."""
    import diffusers

    out = {}
    for shift in shifts:
        out[f"FlowMatchEuler shift {shift:g}"] = lambda s=shift: diffusers.FlowMatchEulerDiscreteScheduler(shift=s)
        out[f"FlowMatchHeun shift {shift:g}"] = lambda s=shift: diffusers.FlowMatchHeunDiscreteScheduler(shift=s)
        for order in (2, 3):
            out[f"DPM-Solver++ {order}M flow shift {shift:g}"] = lambda s=shift, o=order: (
                diffusers.DPMSolverMultistepScheduler(
                    use_flow_sigmas=True, flow_shift=s, prediction_type="flow_prediction", solver_order=o
                )
            )
            out[f"UniPC {order} flow shift {shift:g}"] = lambda s=shift, o=order: diffusers.UniPCMultistepScheduler(
                use_flow_sigmas=True, flow_shift=s, prediction_type="flow_prediction", solver_order=o
            )
    return out


class Velocity:
    """The exact mixture as a flow model (``GaussianMixture.flow_velocity``, its t = 1 limit included); counts
    its calls."""

    def __init__(self, model):
        self.model, self.calls = model, 0

    def __call__(self, x: torch.Tensor, t: float) -> torch.Tensor:
        self.calls += 1
        return self.model.flow_velocity(x, t)


def exact_samples(model, z: torch.Tensor) -> torch.Tensor:
    """The exact flow from x = z at t = 1 to t = 0."""
    dt = 1 - T_START
    x = z + (T_START - 1) * (z - model.mean())  # closed form to O(dt^2) = 1e-14
    sigma = T_START / dt
    return reference_ode_solution(model, x / dt, sigma, 0.0, rtol=1e-10, atol=1e-12)


def rms(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float((x - ref).pow(2).mean(1).sqrt().mean())


def run_diffusers(make, velocity: Velocity, z: torch.Tensor, nfe: int) -> tuple[torch.Tensor, int] | None:
    """The scheduler's loop at the most steps whose model calls fit ``nfe``; None if not even one step does."""
    best = None
    for steps in range(1, nfe + 1):
        scheduler = make()
        scheduler.set_timesteps(steps)
        if len(scheduler.timesteps) > nfe:
            break
        best = steps
    if best is None:
        return None
    scheduler = make()
    scheduler.set_timesteps(best)
    x, velocity.calls = z.clone(), 0
    for t in scheduler.timesteps:
        x = scheduler.step(velocity(x, float(t) / 1000), t, x).prev_sample
    return x, velocity.calls


def run_samplerlab(model, z: torch.Tensor, spec: str, grid, denoiser=None) -> tuple[torch.Tensor, int]:
    """From x = t_0 z at the grid's first level t_0 (t_max, or lower where a grid starts lower)."""
    process = RectifiedFlow()
    x = z * float(grid[0] / (1 + grid[0]))  # x = s sigma z = t z
    solver = solver_from_spec(spec) if isinstance(spec, str) else spec
    r = sample(denoiser or model, x, grid, solver, process=process)
    return r.x, r.nfe


def calibrated_candidates(model, best: tuple, nfe: int, max_evaluations: int) -> dict:
    """The best uncalibrated sampler's solver calibrated (grid + level shift) from the process's start t_max and,
    where its grid starts lower, from that start too: label -> (solver, grid, denoiser)."""
    spec, grid = best
    process = RectifiedFlow()
    out = {}
    for start in sorted({process.sigma_max, float(grid[0])}, reverse=True):
        target = Target(model, process, (model.dim,), sigma_max=start)
        seeds = SeedSplit(range(2 * 10**6, 2 * 10**6 + 256), range(3 * 10**6, 3 * 10**6 + 256),
                          range(4 * 10**6, 4 * 10**6 + 256))  # fmt: skip
        grid_file, _ = calibrate(
            target, spec, nfe, method=CalibrationMethod.GRID_SHIFT, seeds=seeds, max_evaluations=max_evaluations
        )
        levels = grid_file.tensor(process)
        denoiser = LevelShift(model, levels, grid_file.model_sigmas) if grid_file.model_sigmas else None
        out[f"{spec}, calibrated from sigma {start:.3g}"] = (
            grid_file.configure(solver_from_spec(spec)),
            levels,
            denoiser,
        )
    return out


def best_of(candidates: dict, select, test) -> tuple[str, float, float] | None:
    """(label, selection error, test error) of the candidate with the lowest selection error."""
    scored = [(select(c), label, c) for label, c in candidates.items()]
    scored = [s for s in scored if s[0] is not None and math.isfinite(s[0])]
    if not scored:
        return None
    err, label, c = min(scored, key=lambda s: s[0])
    return label, err, test(c)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--problems", default="ring,gmm64,gauss16")
    p.add_argument("--nfe", default="5,8,10,20")
    p.add_argument("--select-samples", type=int, default=200)
    p.add_argument("--test-samples", type=int, default=500)
    p.add_argument("--calibrate-up-to", type=int, default=10, help="calibrate budgets up to this NFE (0: none)")
    p.add_argument("--max-evaluations", type=int, default=1000, help="sampler runs per calibration")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", help="also write the figures to this JSON file")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    process = RectifiedFlow()
    shipped, tuned = diffusers_schedulers(SHIPPED_SHIFTS), diffusers_schedulers(TUNED_SHIFTS)
    nfes = [int(v) for v in args.nfe.split(",")]
    rows = []
    import diffusers

    print(f"samplerlab {samplerlab.__version__}, diffusers {diffusers.__version__}, torch {torch.__version__}")
    for name in args.problems.split(","):
        model = make_problem(name).model
        z_sel = SampleNoise(range(args.select_samples), dtype=torch.float64).randn(model.dim)
        z_test = SampleNoise(range(10**6, 10**6 + args.test_samples), dtype=torch.float64).randn(model.dim)
        ref_sel, ref_test = exact_samples(model, z_sel), exact_samples(model, z_test)
        velocity = Velocity(model)
        print(f"\n== {name} ({model.dim}-D); error: mean RMS per sample to the exact flow from t = 1, "
              f"{args.test_samples} test samples ==")  # fmt: skip
        print(f"{'NFE':>4} {'best diffusers as shipped':<30} {'error':>9} | {'diffusers, shift tuned':<30} "
              f"{'error':>9} | {'best samplerlab':<36} {'error':>9} {'ratio':>11} | {'calibrated':>9} "
              f"{'ratio':>11}")  # fmt: skip
        for nfe in nfes:

            def d_err(make, z, ref, nfe=nfe):
                out = run_diffusers(make, velocity, z, nfe)
                return None if out is None else rms(out[0], ref)

            peer = best_of(shipped, lambda m: d_err(m, z_sel, ref_sel), lambda m: d_err(m, z_test, ref_test))
            peer_tuned = best_of(tuned, lambda m: d_err(m, z_sel, ref_sel), lambda m: d_err(m, z_test, ref_test))
            candidates = {}
            for spec in SOLVERS:
                steps = solver_from_spec(spec).steps_for_nfe(nfe)
                for grid_name in GRIDS if steps else ():
                    try:
                        candidates[f"{spec} on {grid_name}"] = (spec, make_grid(grid_name, steps, process))
                    except ValueError:
                        continue

            def s_err(c, z, ref, denoiser=None):
                x, counted = run_samplerlab(model, z, c[0], c[1], denoiser)
                assert counted <= nfe
                return rms(x, ref)

            ours = best_of(candidates, lambda c: s_err(c, z_sel, ref_sel), lambda c: s_err(c, z_test, ref_test))
            row = {"problem": name, "nfe": nfe, "diffusers": peer, "diffusers_tuned": peer_tuned,
                   "samplerlab": ours, "calibrated": None}  # fmt: skip
            if ours and nfe <= args.calibrate_up_to:
                row["calibrated"] = best_of(
                    calibrated_candidates(model, candidates[ours[0]], nfe, args.max_evaluations),
                    lambda c: s_err(c, z_sel, ref_sel, c[2]),
                    lambda c: s_err(c, z_test, ref_test, c[2]),
                )
            rows.append(row)
            cal = row["calibrated"]

            def ratios(err):
                return f"{err / peer[2]:>5.2f}/{err / peer_tuned[2]:<5.2f}"

            print(
                f"{nfe:>4} {peer[0]:<30} {peer[2]:>9.3g} | {peer_tuned[0]:<30} {peer_tuned[2]:>9.3g} | {ours[0]:<36} "
                f"{ours[2]:>9.3g} {ratios(ours[2])} | " + (f"{cal[2]:>9.3g} {ratios(cal[2])}" if cal else "-"),
                flush=True,
            )
    print(f"\n{time.perf_counter() - started:.0f} s in all ({args.threads} thread(s))")
    if args.json:
        from samplerlab.io import atomic_write_text

        atomic_write_text(args.json, json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
