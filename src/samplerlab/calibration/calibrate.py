"""``calibrate``: a few-step sampler's grid fitted to a model, checked on held-out seeds, written as a grid file.

For a model (``Target``), a deterministic solver and an NFE budget: the teacher (a tight adaptive solve) on
three disjoint seed sets (fit, validation, test); the best built-in grid for that solver on the validation
seeds as the starting point and the baseline; the fit (``learn``); and the report on the test seeds, both
errors (trajectory RMS to the teacher, sliced W2 to the teacher's samples; and where the model is an exact
analytic one, the NLL gap to exact samples, whose sign says over- (< 0) or under-concentrated (> 0)).
"""

from __future__ import annotations

import dataclasses
import datetime
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..grids import GridFile, make_grid
from ..metrics.analytic import nll_gap
from ..solvers import Solver, make_solver
from .dp import check_dp_limits, dp_evaluations, dp_grid
from .learn import CalibrationMethod, LearnedSampler, Scores, learn, run_sampler, score
from .teacher import Target, fingerprint, solve_teacher

__all__ = [
    "SeedSplit",
    "CalibrationReport",
    "BASELINE_GRIDS",
    "FLOW_BASELINE_GRIDS",
    "baseline_grid",
    "calibrate",
    "best_builtin_grid",
]

# the built-in grids a calibration starts from and is measured against: Karras et al. (2022) at several rho,
# uniform log-SNR (Lu et al. 2022), polyexponential, and the process's uniform time (Song et al. 2021)
BASELINE_GRIDS = (
    ("karras", {}),
    ("karras", {"rho": 3.0}),
    ("karras", {"rho": 5.0}),
    ("karras", {"rho": 10.0}),
    ("karras", {"rho": 15.0}),
    ("logsnr", {}),
    ("polyexponential", {"rho": 2.0}),
    ("uniform-time", {}),
)


@dataclass(frozen=True)
class SeedSplit:
    """Disjoint seed sets: ``fit`` (the loss), ``validation`` (early stopping, selection, the baseline's choice)
    and ``test`` (the report)."""

    fit: range = range(0, 256)
    validation: range = range(100_000, 100_256)
    test: range = range(200_000, 201_000)

    def __post_init__(self):
        sets = [set(self.fit), set(self.validation), set(self.test)]
        if any(not s for s in sets) or sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2]:
            raise ValueError(f"fit, validation and test seeds must be non-empty and disjoint, got {self}")

    def describe(self) -> dict:
        return {
            k: f"{r.start}-{r.stop - 1}"
            for k, r in (("fit", self.fit), ("validation", self.validation), ("test", self.test))
        }


@dataclass
class CalibrationReport:
    solver: str
    nfe: int
    method: str
    baseline: str
    baseline_test: Scores
    calibrated_test: Scores
    nll_gap_baseline: float | None
    nll_gap_calibrated: float | None
    evaluations: int
    seconds: float

    @property
    def rms_ratio(self) -> float:
        return self.calibrated_test.rms / self.baseline_test.rms

    @property
    def distribution_worse(self) -> bool:
        """The calibrated sampler raised the distribution error (sliced W2) by more than 10 %."""
        return self.calibrated_test.sw2 > 1.1 * self.baseline_test.sw2

    def lines(self) -> list[str]:
        def nll(v):
            return "" if v is None else f", NLL gap {v:+.3g} nats"

        out = [
            f"{self.solver} at {self.nfe} NFE, {self.method}, test seeds:",
            f"  baseline   {self.baseline}: RMS to teacher {self.baseline_test.rms:.4g}, "
            f"SW2 {self.baseline_test.sw2:.4g}{nll(self.nll_gap_baseline)}",
            f"  calibrated: RMS to teacher {self.calibrated_test.rms:.4g} ({self.rms_ratio:.2f}x), "
            f"SW2 {self.calibrated_test.sw2:.4g}{nll(self.nll_gap_calibrated)}",
        ]
        if self.rms_ratio > 1:
            out.append(f"  WARNING: the calibrated grid is worse than {self.baseline} on the test seeds")
        if self.distribution_worse:
            out.append("  WARNING: the calibrated grid raises the distribution error (SW2) by more than 10 %")
        return out

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.update(rms_ratio=self.rms_ratio, distribution_worse=self.distribution_worse)
        return d


# under rectified flow also the flow-matching grids: uniform in flow time, shifted (SD3: shift 3; shift < 1 puts
# more steps at low noise, which few-step sampling of low-dimensional data needs), and Flux's
FLOW_BASELINE_GRIDS = (
    ("flow", {}),
    ("flow", {"shift": 3.0}),
    ("flow", {"shift": 0.5}),
    ("flux", {"mu": 0.0}),
    ("flux", {"mu": -1.0}),
)


def baseline_grid(name: str, params: dict, steps: int, target: Target) -> torch.Tensor:
    """A built-in grid laid on the target's range (flow grids: from its start; uniform-time: the process's)."""
    if name == "uniform-time":  # the process's own times
        return make_grid(name, steps, target.process)
    if name in ("flow", "flux"):  # flow times from t = 1, standing at the target's start
        return make_grid(name, steps, target.process, sigma_max=target.sigma_max, **params)
    return make_grid(name, steps, target.process, sigma_min=target.sigma_min, sigma_max=target.sigma_max, **params)


def best_builtin_grid(target: Target, solver: Solver, steps: int, teacher) -> tuple[str, torch.Tensor, Scores]:
    """The built-in grid (``BASELINE_GRIDS``, and ``FLOW_BASELINE_GRIDS`` under rectified flow) with the lowest
    RMS to the teacher on ``teacher``'s seeds."""
    best = None
    candidates = BASELINE_GRIDS + (FLOW_BASELINE_GRIDS if target.process.name == "rectified-flow" else ())
    for name, params in candidates:
        try:
            grid = baseline_grid(name, params, steps, target)
        except (ValueError, TypeError):
            continue
        if float(grid[0]) != target.sigma_max:
            continue
        scores = score(run_sampler(target, teacher, solver, grid), teacher)
        label = name + "".join(f":{k}={v:g}" for k, v in params.items())
        if best is None or scores.rms < best[2].rms:
            best = (label, grid, scores)
    if best is None:
        raise ValueError(f"no built-in grid fits {target.process.name} from sigma_max={target.sigma_max:g}")
    return best


def calibrate(
    target: Target,
    solver: Solver | str,
    nfe: int,
    *,
    method: CalibrationMethod | str = CalibrationMethod.GRID_SHIFT,
    seeds: SeedSplit = SeedSplit(),
    max_evaluations: int = 1500,
    teacher_rtol: float | None = None,
    state_path: str | Path | None = None,
    exact=None,
    progress: bool = False,
    teachers: tuple | None = None,
    dp_candidates: int = 200,
) -> tuple[GridFile, CalibrationReport]:
    """Fit ``solver``'s grid at ``nfe`` model calls to ``target``'s model; returns the grid file (not yet
    written) and the held-out report. ``exact``: an analytic model with ``log_prob`` and ``sample`` (the
    denoiser itself when it has them) for the NLL gap. ``state_path`` makes the fit resumable. ``teachers``:
    the (fit, validation, test) ``TeacherSet``s of ``seeds`` when already solved (a benchmark's many fits)."""
    started = time.perf_counter()
    solver = make_solver(solver) if isinstance(solver, str) else solver
    method = CalibrationMethod.parse(method)
    if solver.stochastic or solver.adaptive:
        kind = "stochastic" if solver.stochastic else "adaptive"
        raise ValueError(f"{solver.describe()} is {kind}: calibration fits deterministic fixed-step solvers")
    steps = solver.steps_within(nfe)
    if steps < 2:
        raise ValueError(f"{solver.describe()} takes 1 step at {nfe} NFE: there is no level to calibrate")
    if exact is None and hasattr(target.denoiser, "log_prob") and hasattr(target.denoiser, "sample"):
        exact = target.denoiser

    if method is CalibrationMethod.DP:
        check_dp_limits(steps, dp_candidates)  # before any work
    if method is CalibrationMethod.GRID_SHIFT_COEFFICIENTS:
        try:
            dataclasses.replace(solver, coefficients=(0.0,) * steps)
        except TypeError:
            raise ValueError(
                f"{solver.describe()} has no coefficients to calibrate; dpm-solver++ and dpm-solver:multistep=true "
                "(order 2) have"
            ) from None
    model_id = fingerprint(target.denoiser)  # hashes every weight: once per calibration
    if teachers is None:
        teachers = tuple(solve_teacher(target, s, teacher_rtol) for s in (seeds.fit, seeds.validation, seeds.test))
    fit, validation, test = teachers
    baseline, baseline_grid, baseline_val = best_builtin_grid(target, solver, steps, validation)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        total = dp_evaluations(steps, dp_candidates) if method is CalibrationMethod.DP else max_evaluations
        bar = tqdm(total=total, desc=f"calibrate {solver.describe()} @ {nfe} NFE ({method.value})", unit="run")
    try:
        if method is CalibrationMethod.DP:
            found = dp_grid(
                target, solver, steps, seeds.fit, candidates=dp_candidates, teacher_rtol=teacher_rtol, progress=bar
            )
            val = score(run_sampler(target, validation, solver, found.grid), validation)
            learned = LearnedSampler(found.grid, None, val, baseline_val, dp_evaluations(steps, dp_candidates))
        else:
            key = f"{model_id}|{solver.describe()}|{steps}|{seeds.describe()}"
            # the levels first; with shifts, the shifts then start from the fitted levels (fitting both at once
            # from the built-in grid converges less well: more parameters for Nelder-Mead's simplex)
            stages = {
                CalibrationMethod.GRID: [CalibrationMethod.GRID],
                CalibrationMethod.GRID_SHIFT: [CalibrationMethod.GRID, CalibrationMethod.GRID_SHIFT],
                CalibrationMethod.GRID_SHIFT_COEFFICIENTS: list(CalibrationMethod)[1:],
            }[method]
            start, shifts, learned, used = baseline_grid, None, None, 0
            for k, stage in enumerate(stages):
                budget = (max_evaluations - used) // (len(stages) - k)
                stage_state = None if state_path is None else Path(f"{state_path}.{stage.value}")
                learned = learn(
                    target,
                    solver,
                    steps,
                    stage,
                    fit,
                    validation,
                    start,
                    initial_shifts=shifts,
                    max_evaluations=budget,
                    state_path=stage_state,
                    state_key=f"{key}|{stage.value}",
                    progress=bar,
                    sw2_reference=baseline_val.sw2,
                )
                start, shifts, used = learned.grid, learned.model_sigmas, used + learned.evaluations
            learned.evaluations, learned.initial_validation = used, baseline_val
    finally:
        if bar is not None:
            bar.close()

    baseline_samples = run_sampler(target, test, solver, baseline_grid)
    calibrated = (
        solver if learned.coefficients is None else dataclasses.replace(solver, coefficients=learned.coefficients)
    )
    calibrated_samples = run_sampler(target, test, calibrated, learned.grid, learned.model_sigmas)
    gaps = (None, None)
    if exact is not None:
        truth = exact.sample(len(seeds.test), torch.Generator().manual_seed(1))
        gaps = tuple(nll_gap(exact, s.reshape(s.shape[0], -1), truth) for s in (baseline_samples, calibrated_samples))
    counted = _counted_nfe(target, test, calibrated, learned)
    report = CalibrationReport(
        solver.describe(),
        counted,
        method.value,
        baseline,
        score(baseline_samples, test),
        score(calibrated_samples, test),
        gaps[0],
        gaps[1],
        learned.evaluations,
        time.perf_counter() - started,
    )
    from .. import __version__

    grid_file = GridFile(
        tuple(learned.grid.tolist()),
        None if learned.model_sigmas is None else tuple(learned.model_sigmas),
        {
            "made_by": "samplerlab calibrate",
            "samplerlab_version": __version__,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "model_fingerprint": model_id,
            "process": target.process.name,
            # where the file is valid: the process's numbers (rectified flow: t_min, t_max) and the sampled range
            "process_params": {
                k: v for k, v in vars(target.process).items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            },
            "sigma_range": [target.sigma_min, target.sigma_max],
            "solver": solver.describe(),
            "nfe": counted,
            "method": method.value,
            "loss": "RMS to the teacher's end points (dopri5), fit seeds; selection on validation seeds "
            "with sliced W2 <= 1.1x the baseline's",
            "teacher_nfe": fit.nfe,
            "seeds": seeds.describe(),
            "baseline": baseline,
            "report": report.to_dict(),
        },
        learned.coefficients,
    )
    return grid_file, report


def _counted_nfe(target, teacher, solver, learned) -> int:
    from ..denoisers import LevelShift
    from ..sampling import sample

    denoiser = target.denoiser
    if learned.model_sigmas is not None:
        denoiser = LevelShift(denoiser, learned.grid, learned.model_sigmas)
    x = teacher.x_T[:1]
    cond = {k: (v[:1] if isinstance(v, torch.Tensor) else v) for k, v in teacher.cond.items()}
    return sample(denoiser, x, learned.grid, solver, process=target.process, cond=cond).nfe
