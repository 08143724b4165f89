"""The exact-score benchmark: every solver x NFE on analytic Gaussian-mixture problems.

Because the denoiser is exact, every number measures the sampler alone:
  rms_ode   distance to the exact probability-flow ODE solution from the same noise
            (deterministic solvers only; a float64 DOP853 solve at rtol 1e-8),
  sw2       sliced Wasserstein-2 to exact data samples (floor: two exact sets),
  nll_gap   mean NLL of the samples under the true density minus that of exact samples.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..denoisers import LevelShift
from ..grids import GRIDS, GridFile, is_grid_file, make_grid
from ..io import atomic_path, remove_stale_temporaries
from ..metrics import nll_gap, reference_ode_solution, rms_distance, sliced_wasserstein2
from ..noise import SampleNoise
from ..problems import PROBLEMS, AnalyticProblem, make_problem
from ..processes import PROCESSES, make_process
from ..registry import parse_spec
from ..sampling import prior_sample, sample
from ..solvers import solver_from_spec
from .config import DTYPES, check_dtype
from .store import append_record, read_results

__all__ = ["BenchConfig", "BenchRow", "BenchStore", "ProblemSummary", "run_bench"]

# One entry per solver family (a spec is NAME or NAME:KEY=VALUE:...). annealed-langevin is left out of
# the default: with its paper's 100 steps per level it cannot use budgets of 5-50 NFE.
DEFAULT_SOLVERS = [
    "euler",
    "heun",
    "ddim",
    "euler-ancestral",
    "euler-maruyama",
    "edm-stochastic",
    "crash",
    "dpm-solver:order=2",
    "dpm-solver:order=3",
    "dpm-solver++",
    "dpm-solver++:order=3",
    "sde-dpm-solver++",
    "deis-tab:order=3",
    "deis-rhork:tableau=rk4",
    "lms",
    "ipndm",
    "unipc:order=2",
    "unipc:order=3",
    "pc:corrector=annealed-langevin",
    "dopri5",
    "ggf",
]


@dataclass
class BenchConfig:
    problems: list[str] = field(default_factory=lambda: ["ring", "gmm64"])
    solvers: list[str] = field(default_factory=lambda: list(DEFAULT_SOLVERS))
    solver_params: dict[str, dict] = field(default_factory=dict)  # extra parameters per solver spec
    adaptive_tolerances: list[float] | None = None  # None: each adaptive solver's own bench_tolerances
    grid: str = "karras"
    grid_params: dict = field(default_factory=dict)
    process: str = "edm"
    process_params: dict = field(default_factory=dict)
    nfes: list[int] = field(default_factory=lambda: [5, 10, 20, 50])
    num_samples: int | None = None  # None: each problem's default
    seed: int = 0
    dtype: str = "float32"

    def validate(self) -> None:
        """Resolve every name once, so a typo fails before any work."""
        for name in self.problems:
            PROBLEMS.get(name)
        for spec in self.solvers:
            self.solver(spec)
        unknown = set(self.solver_params) - set(self.solvers)
        if unknown:
            raise ValueError(f"solver parameters given for solvers not in the run: {sorted(unknown)}")
        if self.adaptive_tolerances is not None and (
            not self.adaptive_tolerances or any(not t > 0 for t in self.adaptive_tolerances)
        ):
            raise ValueError(f"adaptive tolerances must be positive, got {self.adaptive_tolerances}")
        for spec in self.solvers:  # each tolerance a valid setting of each adaptive solver
            solver = self.solver(spec)
            for tol in self.tolerances(solver) if solver.adaptive else ():
                solver.with_tolerance(tol).check_parameters()
        PROCESSES.get(self.process)
        check_dtype(self.dtype)
        bad = [n for n in self.nfes if int(n) != n or n < 1]
        if bad or not self.nfes:
            raise ValueError(f"NFE budgets must be positive integers, got {self.nfes}")
        if self.num_samples is not None and self.num_samples < 2:
            raise ValueError(f"num_samples must be at least 2, got {self.num_samples}")
        if is_grid_file(self.grid):
            GridFile.read(self.grid)
        else:  # the name, spec ("flow:shift=3") and parameters: the first cell's grid, built before any work
            GRIDS.get(parse_spec(self.grid, "grid", "flow:shift=3")[0])
            first = next((self.solver(s) for s in self.solvers if not self.solver(s).adaptive), None)
            steps = (first.steps_for_nfe(min(self.nfes)) if first and self.nfes else None) or 2
            make_grid(self.grid, steps, make_process(self.process, **self.process_params), **self.grid_params)

    def solver(self, spec: str):
        return solver_from_spec(spec, **self.solver_params.get(spec, {}))

    def num_cells(self) -> int:
        """Cells of the run: an NFE budget (fixed-step solvers) or a tolerance (adaptive) per problem."""
        solvers = [self.solver(spec) for spec in self.solvers]
        return len(self.problems) * sum(len(self.tolerances(s)) if s.adaptive else len(self.nfes) for s in solvers)

    def tolerances(self, solver) -> list[float]:
        return list(self.adaptive_tolerances or solver.bench_tolerances)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class BenchRow:
    problem: str
    solver: str
    nfe_budget: int | None  # None for adaptive solvers, which run at a tolerance instead
    steps: int | None
    nfe: int | None  # counted
    rms_ode: float | None
    sw2: float | None
    nll_gap: float | None
    wall_seconds: float | None
    overhead_share: float | None
    note: str = ""
    tolerance: float | None = None  # adaptive solvers
    same_as: str = ""  # an earlier solver whose samples this one's equal at every budget (``same_samples``)


@dataclass
class ProblemSummary:
    name: str
    description: str
    dim: int
    num_samples: int
    sw2_floor: float
    reference_seconds: float


class BenchStore:
    """Finished cells of a bench run in a folder, so that a killed run resumes: each cell's row is a line of
    ``cells.jsonl`` (``store.append_record``: flushed, fsynced, a torn last line ignored) and, for fixed-step
    solvers, its samples a safetensors file written atomically *before* the line (needed to find aliases).
    A cell is found again by its key, which holds everything its numbers depend on."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.folder)  # of a run killed mid-write
        self.rows = read_results(self.folder / "cells.jsonl")

    def _samples_path(self, key: str) -> Path:
        return self.folder / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.safetensors"

    def get(self, key: str) -> tuple[BenchRow, torch.Tensor | None] | None:
        rec = self.rows.get(key)
        if rec is None:
            return None
        samples = None
        if rec["has_samples"]:
            from safetensors.torch import load_file

            path = self._samples_path(key)
            if not path.is_file():
                return None
            samples = load_file(str(path))["x"]
        return BenchRow(**rec["row"]), samples

    def put(self, key: str, row: BenchRow, samples: torch.Tensor | None) -> None:
        if samples is not None:
            from safetensors.torch import save_file

            with atomic_path(self._samples_path(key)) as tmp:
                save_file({"x": samples.contiguous()}, str(tmp))
        record = {"key": key, "row": dataclasses.asdict(row), "has_samples": samples is not None}
        append_record(self.folder / "cells.jsonl", record)
        self.rows[key] = record


def run_bench(
    config: BenchConfig,
    progress: Callable[[str], None] | None = None,
    store: BenchStore | None = None,
) -> tuple[list[ProblemSummary], list[BenchRow]]:
    """Run the whole grid; ``progress`` is called once per finished cell with a label. With a ``store``,
    finished cells are kept there as they finish and cells already there are not run again (resume)."""
    config.validate()
    dtype = DTYPES[config.dtype]
    process = make_process(config.process, **config.process_params)
    summaries, rows = [], []
    for pname in config.problems:
        problem = make_problem(pname)
        summary, problem_rows = _bench_problem(problem, config, process, dtype, progress, store)
        summaries.append(summary)
        rows.extend(problem_rows)
    return summaries, rows


def _cell_key(config: BenchConfig, problem: str, n: int, spec: str, budget=None, tolerance=None) -> str:
    """Everything a cell's numbers depend on, as a string."""
    return json.dumps(
        {
            "problem": problem,
            "samples": n,
            "seed": config.seed,
            "dtype": config.dtype,
            "solver": spec,
            "solver_params": config.solver_params.get(spec, {}),
            "nfe": budget,
            "tolerance": tolerance,
            "grid": config.grid,
            "grid_params": config.grid_params,
            "process": config.process,
            "process_params": config.process_params,
        },
        sort_keys=True,
    )


def _bench_problem(problem: AnalyticProblem, config: BenchConfig, process, dtype, progress, store=None):
    n = config.num_samples or problem.num_samples
    seeds = range(config.seed, config.seed + n)
    model64 = problem.model
    model = model64.to(dtype)

    # exact data samples, and a second independent set for the metric's floor
    true_a = model64.sample(n, torch.Generator().manual_seed(10_000_019 + config.seed))
    true_b = model64.sample(n, torch.Generator().manual_seed(20_000_003 + config.seed))
    floor = sliced_wasserstein2(true_a, true_b)

    # the exact ODE solution from each seed's starting noise (the first draw of its stream, as in
    # prior_sample), per grid start and end, computed when first needed
    z_T = SampleNoise(seeds, dtype=torch.float64).randn(problem.dim)
    references: dict[tuple[float, float], torch.Tensor] = {}
    ref_seconds = 0.0

    def reference(grid) -> torch.Tensor:
        nonlocal ref_seconds
        key = (float(grid[0]), float(grid[-1]))
        if key not in references:
            start = time.perf_counter()
            sol = reference_ode_solution(model64, z_T * key[0], key[0], key[1])
            references[key] = sol * float(process.scale(key[1]))
            ref_seconds += time.perf_counter() - start
        return references[key]

    rows = []
    finals: dict[str, dict] = {}  # spec -> {budget: (nfe, samples)} of the fixed-step runs, to find aliases
    x_T_cache: dict[float, torch.Tensor] = {}

    grid_file = GridFile.read(config.grid) if is_grid_file(config.grid) else None

    def run(solver, grid):
        sigma_start = float(grid[0])
        denoiser = model
        if grid_file is not None and grid_file.model_sigmas is not None:  # a calibrated level shift
            denoiser = LevelShift(model, grid, grid_file.model_sigmas)
        if solver.stochastic:  # its noise stream continues after the prior draw
            noise = SampleNoise(seeds, dtype=dtype)
            x_T = prior_sample(process, sigma_start, noise, (problem.dim,))
        else:
            noise = None
            if sigma_start not in x_T_cache:
                x_T_cache[sigma_start] = prior_sample(
                    process, sigma_start, SampleNoise(seeds, dtype=dtype), (problem.dim,)
                )
            x_T = x_T_cache[sigma_start]
        return sample(denoiser, x_T, grid, solver, process=process, noise=noise)

    def measured(spec, solver, budget, steps, grid, result, note="", tolerance=None):
        x = result.x.to(torch.float64)
        return BenchRow(
            problem.name,
            spec,
            budget,
            steps,
            result.nfe,
            None if solver.stochastic else rms_distance(x, reference(grid)),
            sliced_wasserstein2(x, true_a),
            nll_gap(model64, x, true_a),
            result.wall_seconds,
            result.overhead_share,
            note,
            tolerance,
        )

    for spec in config.solvers:
        solver = config.solver(spec)
        if solver.adaptive and grid_file is not None:
            rows.append(_skipped(problem.name, spec, None, f"skipped: {spec} is adaptive; the grid file is not for it"))
            continue
        if solver.adaptive:
            grid = make_grid(config.grid, 2, process, **config.grid_params)  # [sigma_max, sigma_min, final]
            for tol in config.tolerances(solver):
                key = _cell_key(config, problem.name, n, spec, tolerance=tol)
                stored = store.get(key) if store else None
                if stored:
                    rows.append(stored[0])
                else:
                    tuned = solver.with_tolerance(tol)
                    result = run(tuned, grid)
                    rows.append(measured(spec, tuned, None, None, grid, result, tolerance=tol))
                    if store:
                        store.put(key, rows[-1], None)
                if progress:
                    progress(f"{problem.name} {spec} tol {tol:g}")
            continue
        for budget in config.nfes:
            steps = solver.steps_for_nfe(budget)
            misfit = grid_file.misfit(solver, steps) if grid_file is not None and steps is not None else None
            if misfit:
                rows.append(_skipped(problem.name, spec, budget, f"skipped: {misfit} at {budget} NFE"))
            elif steps is None:
                rows.append(
                    BenchRow(
                        problem.name,
                        spec,
                        budget,
                        None,
                        None,
                        None,
                        None,
                        None,
                        None,
                        None,
                        f"skipped: {spec} needs at least {solver.nfe(1)} NFE",
                    )
                )
            else:
                key = _cell_key(config, problem.name, n, spec, budget=budget)
                stored = store.get(key) if store else None
                if stored:
                    row, x = stored
                else:
                    grid = make_grid(config.grid, steps, process, **config.grid_params)
                    result = run(solver if grid_file is None else grid_file.configure(solver), grid)
                    note = "" if result.nfe == budget else f"{result.nfe} NFE: {budget} does not fit {spec}'s steps"
                    row, x = measured(spec, solver, budget, steps, grid, result, note), result.x
                    if store:
                        store.put(key, row, x)
                rows.append(row)
                finals.setdefault(spec, {})[budget] = (row.nfe, x)
            if progress:
                progress(f"{problem.name} {spec} NFE {budget}")
    heads: list[str] = []
    for spec, runs in finals.items():  # each solver against the first of every group so far
        head = next((h for h in heads if same_samples(finals[h], runs)), None)
        if head is None:
            heads.append(spec)
        else:
            for row in rows:
                if row.solver == spec and row.tolerance is None:
                    row.same_as = head
    summary = ProblemSummary(problem.name, problem.description, problem.dim, n, floor, ref_seconds)
    return summary, rows


SAME_FRACTION = 0.99  # of samples that must agree for two solvers to count as one sampler


def same_samples(a: dict, b: dict) -> bool:
    """Whether two fixed-step solvers' runs ({budget: (nfe, samples)}) are one sampler under two names: the same
    budgets and counted NFE, and at every budget at least 99 % of the samples equal to 1e-4 (relative and
    absolute, in the max norm). Not all: in float32 two formulas of one sampler round differently, and a
    sample on a boundary between modes can then end in another mode."""
    if a.keys() != b.keys():
        return False
    for budget, (nfe_a, x_a) in a.items():
        nfe_b, x_b = b[budget]
        if nfe_a != nfe_b:
            return False
        flat_a, flat_b = x_a.reshape(len(x_a), -1), x_b.reshape(len(x_b), -1)
        gap = (flat_a - flat_b).abs().amax(1)
        agree = gap <= 1e-4 * (1 + flat_a.abs().amax(1))
        if float(agree.double().mean()) < SAME_FRACTION:
            return False
    return True


def _skipped(problem: str, spec: str, budget: int | None, note: str) -> "BenchRow":
    return BenchRow(problem, spec, budget, None, None, None, None, None, None, None, note)
