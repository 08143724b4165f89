"""The experiment runner: a grid of solver x schedule x transform x steps from a TOML file.

    samplerlab run examples/sgmse_schedule_study.toml --out runs/study

Each finished cell is appended to ``results.jsonl`` the moment it finishes (one JSON line, flushed and
fsynced); a re-run reads it, skips finished cells and computes the rest, so a crash loses at most the
cell in flight. A torn last line (a crash mid-write) is ignored. At the end the runner writes a
mean ± std table per metric (Markdown and CSV, best per column marked), metric-vs-steps plots and the
sigma(t) curves with each configuration's steps.

TOML layout::

    [experiment]
    name = "schedule-study"
    problem = "ouve-gmm"        # conditional (ouve-gmm), unconditional (ring, gmm64, gauss16) or "speech"
    # corpus = "data/speech-corpus"   # problem = "speech": a make-corpus folder; files = 10; prior = "utterance";
    #                                   model = "gaussian" or a speech train checkpoint; dnsmos = "MODEL_DIR"
    process = "ouve"            # the base process the model was trained with
    samples = 256
    seed = 0
    dtype = "float64"
    metrics = ["snr_db", "rms_posterior_mean", "posterior_nll_gap"]

    [[study]]
    name = "interchanged schedules"
    solvers = ["pc:corrector=annealed-langevin:snr=0.5"]
    schedules = ["ouve", "linear", "subvp", "ve", "vp", "edm"]   # "base" = the process's own
    transforms = ["none"]       # none | steepness=A | offset=A | power=P
    steps = [10, 15, 30]        # or nfe = [...]
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..grids import time_steps
from ..io import atomic_write_text
from ..noise import SampleNoise
from ..problems import CONDITIONAL_PROBLEMS, PROBLEMS, make_conditional_problem, make_problem
from ..sampling import prior_sample, sample
from ..processes import PROCESSES, Process, make_process
from ..schedules import SHAPES, ScheduledProcess
from ..solvers import solver_from_spec
from .bench import DTYPES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["Transform", "StudyConfig", "ExperimentConfig", "Cell", "load_experiment", "run_experiment", "METRICS"]


class TransformKind(enum.Enum):
    NONE = "none"
    STEEPNESS = "steepness"
    OFFSET = "offset"
    POWER = "power"


@dataclass(frozen=True)
class Transform:
    """A schedule modification: steepness alpha (on the schedule), timestep offset alpha or a power warp
    of the steps (on the grid); see ``schedules`` and ``grids.time_steps``."""

    kind: TransformKind = TransformKind.NONE
    value: float = 1.0

    @classmethod
    def parse(cls, text: str) -> "Transform":
        text = text.strip()
        name, eq, value = text.partition("=")
        try:
            kind = TransformKind(name.strip())
        except ValueError:
            raise ValueError(f"unknown transform {text!r}; valid: none, steepness=A, offset=A, power=P") from None
        if kind is TransformKind.NONE:
            return cls()
        try:
            v = float(value)
        except ValueError:
            raise ValueError(f"transform {text!r} needs a number, e.g. {name}=1.2") from None
        if not v > 0 or (kind is TransformKind.OFFSET and v > 1):
            raise ValueError(f"transform {text!r}: steepness and power must be > 0, offset in (0, 1]")
        return cls(kind, v)

    def label(self) -> str:
        return "none" if self.kind is TransformKind.NONE else f"{self.kind.value}={self.value:g}"


@dataclass
class StudyConfig:
    name: str
    solvers: list[str]
    schedules: list[str] = field(default_factory=lambda: ["base"])
    transforms: list[str] = field(default_factory=lambda: ["none"])
    steps: list[int] = field(default_factory=list)
    nfe: list[int] = field(default_factory=list)


@dataclass
class ExperimentConfig:
    name: str
    problem: str
    studies: list[StudyConfig]
    process: str = "edm"
    process_params: dict = field(default_factory=dict)
    samples: int | None = None
    seed: int = 0
    dtype: str = "float64"
    metrics: list[str] = field(default_factory=list)
    # problem = "speech": real recordings of a corpus's test split, enhanced with the Gaussian-prior model
    corpus: str = ""
    files: int | None = None  # test files used (default: all)
    model: str = "gaussian"  # gaussian, or a checkpoint folder from samplerlab speech train
    prior: str = "utterance"  # utterance | adaptive | stationary Gaussian prior (speech.gaussian)
    dnsmos: str = ""  # DNSMOS P.835 model folder (metrics.dnsmos), for the dnsmos_* metrics

    @property
    def conditional(self) -> bool:
        return self.problem in CONDITIONAL_PROBLEMS or self.speech

    @property
    def speech(self) -> bool:
        return self.problem == "speech"

    def validate(self) -> None:
        if self.problem not in CONDITIONAL_PROBLEMS and self.problem not in PROBLEMS and not self.speech:
            raise ValueError(f"unknown problem {self.problem!r}; valid names: "
                             f"{', '.join(CONDITIONAL_PROBLEMS.names() + PROBLEMS.names() + ['speech'])}")
        PROCESSES.get(self.process)
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; valid dtypes: {', '.join(DTYPES)}")
        if self.speech and not self.corpus:
            raise ValueError("problem = 'speech' needs corpus = 'DIR' (a samplerlab speech make-corpus folder)")
        valid = SPEECH_METRICS if self.speech else CONDITIONAL_METRICS if self.conditional else UNCONDITIONAL_METRICS
        if not self.metrics:
            self.metrics = list(DEFAULT_SPEECH_METRICS if self.speech else valid)
        bad = [m for m in self.metrics if m not in valid]
        if bad:
            raise ValueError(f"unknown metrics {bad} for problem {self.problem!r}; valid: {', '.join(valid)}")
        if any(m.startswith("dnsmos_") for m in self.metrics) and not self.dnsmos:
            raise ValueError("the dnsmos_* metrics need dnsmos = 'DIR', the folder with the DNSMOS P.835 model "
                             "(sig_bak_ovr.onnx); samplerlab downloads no weights")
        if not self.studies:
            raise ValueError("the experiment has no [[study]] blocks")
        for st in self.studies:
            if not st.solvers:
                raise ValueError(f"study {st.name!r} lists no solvers")
            for spec in st.solvers:
                solver_from_spec(spec)
            for sched in st.schedules:
                if sched != "base":
                    SHAPES.get(sched)
            for tr in st.transforms:
                Transform.parse(tr)
            if bool(st.steps) == bool(st.nfe):
                raise ValueError(f"study {st.name!r} must give exactly one of steps = [...] or nfe = [...]")
            if any(int(n) != n or n < 1 for n in st.steps + st.nfe):
                raise ValueError(f"study {st.name!r}: steps / nfe must be positive integers")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def load_experiment(path: str | Path) -> ExperimentConfig:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"no experiment file at {path}") from None
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path} is not valid TOML: {err}") from None
    exp = dict(raw.get("experiment", {}))
    studies_raw = raw.get("study", [])
    known = {f.name for f in dataclasses.fields(ExperimentConfig)} - {"studies"}
    unknown = set(exp) - known
    if unknown:
        raise ValueError(f"{path}: unknown [experiment] keys {sorted(unknown)}; valid: {sorted(known)}")
    study_fields = {f.name for f in dataclasses.fields(StudyConfig)}
    studies = []
    for st in studies_raw:
        bad = set(st) - study_fields
        if bad:
            raise ValueError(f"{path}: unknown [[study]] keys {sorted(bad)}; valid: {sorted(study_fields)}")
        studies.append(StudyConfig(**st))
    if "name" not in exp or "problem" not in exp:
        raise ValueError(f"{path}: [experiment] needs name and problem")
    config = ExperimentConfig(studies=studies, **exp)
    config.validate()
    return config


@dataclass(frozen=True)
class Cell:
    study: str
    solver: str
    schedule: str
    transform: str
    steps: int | None
    nfe_budget: int | None

    @property
    def key(self) -> str:
        n = f"steps={self.steps}" if self.steps is not None else f"nfe={self.nfe_budget}"
        return f"{self.study} | {self.solver} | {self.schedule} | {self.transform} | {n}"

    @property
    def config_label(self) -> str:
        return f"{self.solver} / {self.schedule} / {self.transform}"


def cells_of(config: ExperimentConfig) -> list[Cell]:
    out = []
    for st in config.studies:
        for solver in st.solvers:
            for sched in st.schedules:
                for tr in st.transforms:
                    label = Transform.parse(tr).label()
                    for n in st.steps:
                        out.append(Cell(st.name, solver, sched, label, int(n), None))
                    for b in st.nfe:
                        out.append(Cell(st.name, solver, sched, label, None, int(b)))
    return out


# -- metrics ---------------------------------------------------------------------------------------

CONDITIONAL_METRICS = {
    "snr_db": "SNR of the estimate against the clean signal, dB (higher is better)",
    "rms_posterior_mean": "RMS distance to the exact posterior mean E[x0 | y] (lower is better)",
    "posterior_nll_gap": "-log p(x | y) minus that of an exact posterior sample (lower is better; 0 is exact)",
}
UNCONDITIONAL_METRICS = {
    "rms_ode": "RMS distance to the exact probability-flow ODE solution (lower is better)",
    "nll_gap": "-log p(x) minus that of an exact sample (lower is better; 0 is exact)",
}
SPEECH_METRICS = {
    "pesq": "wideband PESQ (higher is better)",
    "estoi": "extended STOI (higher is better)",
    "stoi": "STOI (higher is better)",
    "si_sdr": "SI-SDR, dB (higher is better)",
    "warpq": "raw WARP-Q (lower is better; the samplerlab[warpq] extra)",
    "dnsmos_sig": "DNSMOS P.835 speech signal (higher is better; needs dnsmos = 'MODEL_DIR')",
    "dnsmos_bak": "DNSMOS P.835 background (higher is better; needs dnsmos = 'MODEL_DIR')",
    "dnsmos_ovrl": "DNSMOS P.835 overall (higher is better; needs dnsmos = 'MODEL_DIR')",
    "dnsmos_p808": "DNSMOS P.808 MOS (higher is better; needs model_v8.onnx in dnsmos = 'MODEL_DIR')",
}
DEFAULT_SPEECH_METRICS = ["pesq", "estoi", "stoi", "si_sdr"]  # the optional ones only when asked for
HIGHER_IS_BETTER = {"snr_db", "pesq", "estoi", "stoi", "si_sdr", "dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "dnsmos_p808"}
METRICS = {**CONDITIONAL_METRICS, **UNCONDITIONAL_METRICS, **SPEECH_METRICS}


def _summary(values: torch.Tensor) -> dict:
    v = values.to(torch.float64)
    return {"mean": float(v.mean()), "std": float(v.std()) if len(v) > 1 else 0.0, "n": int(len(v))}


class _Problem:
    """Draws the fixed evaluation set once and scores samples for every cell."""

    def __init__(self, config: ExperimentConfig, base: Process):
        self.config = config
        self.base = base
        self.dtype = DTYPES[config.dtype]
        g = torch.Generator().manual_seed(10_007 + config.seed)
        if config.conditional:
            prob = make_conditional_problem(config.problem)
            n = config.samples or prob.num_samples
            self.dim = prob.dim
            self.x0, self.y = prob.joint.sample(n, g)
            self.posterior = prob.joint.posterior(self.y)
            self.denoiser = prob.joint.residual_posterior(self.y).to(self.dtype)
            self.reference = self.posterior.sample(n, torch.Generator().manual_seed(20_011 + config.seed))
        else:
            prob = make_problem(config.problem)
            n = config.samples or prob.num_samples
            self.dim = prob.dim
            self.model = prob.model
            self.denoiser = prob.model.to(self.dtype)
            self.reference = prob.model.sample(n, g)
        self.n = n
        self.seeds = range(config.seed, config.seed + n)
        self._ode_ref: dict[float, torch.Tensor] = {}

    def baselines(self) -> dict[str, dict]:
        """Reference rows: the noisy input and the exact posterior mean (conditional problems)."""
        if not self.config.conditional:
            return {}
        return {"noisy input y": self.score(self.y, None), "exact posterior mean": self.score(self.posterior.mean(), None)}

    def score(self, x: torch.Tensor, x_T_hat: tuple | None) -> dict:
        x = x.to(torch.float64)
        out = {}
        for m in self.config.metrics:
            if m == "snr_db":
                err = (x - self.x0).pow(2).sum(1)
                out[m] = _summary(10 * torch.log10(self.x0.pow(2).sum(1) / err.clamp_min(1e-30)))
            elif m == "rms_posterior_mean":
                out[m] = _summary((x - self.posterior.mean()).pow(2).mean(1).sqrt())
            elif m == "posterior_nll_gap":
                out[m] = _summary(-self.posterior.log_prob(x) + self.posterior.log_prob(self.reference))
            elif m == "nll_gap":
                out[m] = _summary(-self.model.log_prob(x) + self.model.log_prob(self.reference))
            elif m == "rms_ode":
                out[m] = self._rms_ode(x, x_T_hat)
        return out

    def _rms_ode(self, x, x_T_hat):
        if x_T_hat is None:
            return {"mean": math.nan, "std": math.nan, "n": 0}
        from ..metrics import reference_ode_solution

        sigma_start, start = x_T_hat
        if sigma_start not in self._ode_ref:
            self._ode_ref[sigma_start] = reference_ode_solution(self.model, start, sigma_start, 0.0)
        return _summary((x - self._ode_ref[sigma_start]).pow(2).mean(1).sqrt())


class _SpeechProblem:
    """The test split of a speech corpus enhanced with the exact Gaussian-prior model (``speech.gaussian``) or
    a trained network; every cell enhances the same files with the same seeds, and scores them against the
    clean references."""

    def __init__(self, config: ExperimentConfig, base: Process):
        from ..speech.data import find_speech_pairs, load_pair
        from ..speech.enhance import load_enhancement_model
        from ..speech.gaussian import corpus_prior

        self.config, self.base = config, base
        self.model = load_enhancement_model(config.model, corpus=config.corpus, prior_mode=config.prior)
        self.gaussian = self.model.denoiser if config.model == "gaussian" else corpus_prior(config.corpus, config.prior)
        self.dnsmos = None
        if config.dnsmos:
            from ..metrics.dnsmos import DNSMOS

            self.dnsmos = DNSMOS(config.dnsmos)
        from ..metrics.speech import MetricUnavailable, available_metrics

        missing = [m for m in config.metrics if m not in available_metrics(self.dnsmos)]
        if missing:  # fail now, not after the first cell
            raise MetricUnavailable(f"metrics {missing} cannot run here: WARP-Q needs pip install 'samplerlab[warpq]', "
                                    "dnsmos_p808 needs model_v8.onnx in the dnsmos folder")
        pairs = find_speech_pairs(config.corpus, "test")[: config.files]
        self.signals = [load_pair(p) for p in pairs]
        self.n = len(self.signals)

    def _score_all(self, estimates) -> dict:
        from ..metrics.speech import speech_metrics

        per = [speech_metrics(clean, est, self.config.metrics, dnsmos=self.dnsmos)
               for (clean, _), est in zip(self.signals, estimates)]
        return {m: _summary(torch.tensor([p[m] for p in per])) for m in self.config.metrics}

    def baselines(self) -> dict[str, dict]:
        from ..speech.frontend import spec_to_wav, wav_to_spec
        from ..speech.gaussian import channels_to_complex, complex_to_channels

        wiener = []
        for _, noisy in self.signals:
            peak = float(noisy.abs().max())
            y = complex_to_channels(wav_to_spec(noisy.double() / peak)).unsqueeze(0)
            wiener.append(spec_to_wav(channels_to_complex(self.gaussian.posterior_mean(y)[0]), noisy.shape[-1]) * peak)
        return {"noisy input y": self._score_all([n for _, n in self.signals]),
                f"{self.config.prior} Gaussian prior's posterior mean (Wiener)": self._score_all(wiener)}

    def run(self, process: Process, grid: torch.Tensor, solver) -> dict:
        from ..speech.enhance import enhance

        start = time.perf_counter()
        m = self.model
        outs = [enhance(noisy, m.denoiser, solver, grid=grid, process=process, seed=self.config.seed + i,
                        pad_multiple=m.pad_multiple, dtype=m.dtype) for i, (_, noisy) in enumerate(self.signals)]
        seconds = time.perf_counter() - start
        return {"nfe": outs[0].nfe, "seconds": seconds, "rtf": seconds / sum(o.audio_seconds for o in outs),
                "metrics": self._score_all([o.wav for o in outs])}


def _process_for(cell: Cell, base: Process) -> tuple[Process, Transform]:
    tr = Transform.parse(cell.transform)
    steep = tr.value if tr.kind is TransformKind.STEEPNESS else 1.0
    if cell.schedule == "base" and steep == 1.0:
        return base, tr
    shape = base.name if cell.schedule == "base" else cell.schedule
    if shape not in SHAPES:
        raise ValueError(f"process {base.name!r} has no schedule shape of its own; name one of {SHAPES.names()}")
    return ScheduledProcess.swap(base, shape, steep), tr


def run_cell(cell: Cell, problem: "_Problem | _SpeechProblem") -> dict:
    process, tr = _process_for(cell, problem.base)
    solver = solver_from_spec(cell.solver)
    steps = cell.steps if cell.steps is not None else solver.steps_for_nfe(cell.nfe_budget)
    if steps is None:
        return {"skipped": f"{cell.solver} cannot run within {cell.nfe_budget} NFE"}
    grid = time_steps(steps, process,
                      offset=tr.value if tr.kind is TransformKind.OFFSET else 1.0,
                      power=tr.value if tr.kind is TransformKind.POWER else 1.0)
    if isinstance(problem, _SpeechProblem):
        return {"steps": steps, "sigmas": grid.tolist(), **problem.run(process, grid, solver)}
    noise = SampleNoise(problem.seeds, dtype=problem.dtype)
    x_T = prior_sample(process, float(grid[0]), noise, (problem.dim,))
    start = time.perf_counter()
    result = sample(problem.denoiser, x_T, grid, solver, process=process, noise=noise if solver.stochastic else None)
    seconds = time.perf_counter() - start
    x = result.x.to(torch.float64)
    x_T_hat = None
    if problem.config.conditional:
        x = x + problem.y  # the residual back to data (s(0) = 1 at the final level 0)
    elif not solver.stochastic:
        x_T_hat = (float(grid[0]), x_T.to(torch.float64) / float(process.scale(float(grid[0]))))
    return {"nfe": result.nfe, "steps": steps, "seconds": seconds, "sigmas": grid.tolist(),
            "metrics": problem.score(x, x_T_hat)}


def read_results(path: Path) -> dict[str, dict]:
    """Finished cells by key, from ``path`` and any per-rank shard files beside it
    (results.rank*.jsonl); a torn or malformed line (a crash mid-write) is skipped."""
    done = {}
    for part in [path, *sorted(path.parent.glob(path.stem + ".rank*.jsonl"))]:
        if not part.exists():
            continue
        for line in part.read_text().splitlines():
            try:
                rec = json.loads(line)
                done[rec["key"]] = rec
            except (ValueError, KeyError, TypeError):
                continue
    return done


def _distributed() -> tuple[int, int]:
    """(rank, world size) when launched under torch.distributed (torchrun), else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _append(path: Path, record: dict) -> None:
    torn = False
    if path.exists() and path.stat().st_size > 0:
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            torn = f.read(1) != b"\n"  # a crash mid-write: start a fresh line, keep the torn one ignored
    with open(path, "a", encoding="utf-8") as f:
        f.write(("\n" if torn else "") + json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def run_experiment(
    config: ExperimentConfig,
    out_dir: str | Path,
    *,
    progress: bool = True,
    on_cell: Callable[[Cell, dict], None] | None = None,
) -> dict:
    """Run every unfinished cell, then write tables and plots. Returns {'computed': n, 'reused': n, ...}.

    Under torch.distributed (e.g. ``torchrun --nproc_per_node 2 -m samplerlab.cli run FILE``), rank r takes
    every world-th unfinished cell and appends to results.rank{r}.jsonl; after a barrier rank 0 writes
    the tables. Other ranks return without files.
    """
    config.validate()
    rank, world = _distributed()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        atomic_write_text(out_dir / "config.json", json.dumps(config.to_dict(), indent=2) + "\n")
    results_path = out_dir / "results.jsonl"
    done = read_results(results_path)
    cells = cells_of(config)
    unfinished = [c for c in cells if c.key not in done]
    if world > 1:  # every rank must split the same list: read before anyone writes
        import torch.distributed as dist

        dist.barrier()
    todo = unfinished[rank::world]
    own_path = results_path if world == 1 else out_dir / f"results.rank{rank}.jsonl"
    base = make_process(config.process, **config.process_params)
    problem = _SpeechProblem(config, base) if config.speech else _Problem(config, base)
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc=config.name, unit="cell", file=sys.stderr)
    computed = 0
    for cell in todo:
        outcome = run_cell(cell, problem)
        record = {"key": cell.key, **dataclasses.asdict(cell), **outcome}
        _append(own_path, record)
        done[cell.key] = record
        computed += 1
        if bar:
            bar.set_postfix_str(cell.key[-48:])
            bar.update(1)
        if on_cell:
            on_cell(cell, record)
    if bar:
        bar.close()
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        if rank != 0:
            return {"computed": computed, "reused": len(cells) - len(unfinished), "cells": len(cells), "files": []}
        done = read_results(results_path)
    from .tables import write_tables

    files = write_tables(config, cells, done, problem.baselines(), out_dir)
    return {"computed": computed, "reused": len(cells) - len(unfinished), "cells": len(cells), "files": files}
