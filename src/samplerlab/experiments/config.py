"""The TOML experiment schema and its validation: what ``samplerlab run FILE`` reads.

TOML layout::

    [experiment]
    name = "schedule-study"
    problem = "ouve-gmm"        # conditional (ouve-gmm), unconditional (ring, gmm64, gauss16) or "speech"
    # corpus = "data/speech-corpus"   # problem = "speech": a make-corpus folder; files = 10; prior = "utterance";
    #                                   model = "gaussian", a speech train checkpoint or an SGMSE+ FILE.ckpt
    #                                   (which brings its own process); dnsmos = "MODEL_DIR"
    process = "ouve"            # the base process the model was trained with
    samples = 256
    seed = 0
    dtype = "float64"
    metrics = ["snr_db", "rms_posterior_mean", "posterior_nll_gap"]   # see metrics.registry

    [[study]]
    name = "interchanged schedules"
    solvers = ["pc:corrector=annealed-langevin:snr=0.5"]
    schedules = ["ouve", "linear", "subvp", "ve", "vp", "edm"]   # "base" = the process's own
    transforms = ["none"]       # none | steepness=A | offset=A | power=P
    steps = [10, 15, 30]        # or nfe = [...]
    # normalisation = "marginal" # or "diffusion" (OUVE: shapes rescaled onto SGMSE+'s 0.05..0.5 diffusion sigma)

The file's types and ranges are checked by pydantic (``ExperimentSchema``, ``StudySchema``: strict types, so
``samples = "many"``, ``seed = 1.5`` or ``solvers = "heun"`` are errors, not coercions), then every name is
resolved here, once, before any work; an error names the file, the table, the key, the bad value and the
valid range or choices. A cell is one (study, solver, schedule, transform, steps or NFE budget) of the grid.
"""

from __future__ import annotations

import dataclasses
import enum
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import pydantic
import torch
from pydantic import BaseModel, ConfigDict, Field

from ..grids import GridFile, is_grid_file
from ..metrics.registry import Needs, default_metrics, metrics_for
from ..problems import CONDITIONAL_PROBLEMS, PROBLEMS
from ..processes import Process, make_process
from ..schedules import SHAPES, Normalisation, ScheduledProcess
from ..solvers import solver_from_spec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "DTYPES",
    "TransformKind",
    "Transform",
    "StudyConfig",
    "ExperimentConfig",
    "load_experiment",
    "Cell",
    "cells_of",
    "process_for",
]

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def check_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; valid dtypes: {', '.join(DTYPES)}")
    return DTYPES[name]


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
    normalisation: str = "marginal"  # schedules.Normalisation: which sigma a swapped shape is rescaled onto


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
    model: str = "gaussian"  # gaussian, a checkpoint folder from samplerlab speech train, or an SGMSE+ .ckpt
    prior: str = "utterance"  # utterance | adaptive | stationary Gaussian prior (speech.gaussian)
    dnsmos: str = ""  # DNSMOS model folder (metrics.dnsmos); "": the models the speechmos package ships

    @property
    def conditional(self) -> bool:
        return self.problem in CONDITIONAL_PROBLEMS or self.speech

    @property
    def speech(self) -> bool:
        return self.problem == "speech"

    @property
    def needs(self) -> Needs:
        """What the problem offers the metrics to be computed against."""
        if self.speech:
            return Needs.CLEAN_RECORDING
        return Needs.EXACT_POSTERIOR if self.conditional else Needs.EXACT_DENSITY

    def validate(self) -> None:
        if self.problem not in CONDITIONAL_PROBLEMS and self.problem not in PROBLEMS and not self.speech:
            raise ValueError(
                f"unknown problem {self.problem!r}; valid names: "
                f"{', '.join(CONDITIONAL_PROBLEMS.names() + PROBLEMS.names() + ['speech'])}"
            )
        make_process(self.process, **self.process_params)  # the name and its parameters
        check_dtype(self.dtype)
        if self.speech and not self.corpus:
            raise ValueError("problem = 'speech' needs corpus = 'DIR' (a samplerlab speech make-corpus folder)")
        valid = metrics_for(self.needs)
        if not self.metrics:
            self.metrics = default_metrics(self.needs)
        bad = [m for m in self.metrics if m not in valid]
        if bad:
            raise ValueError(f"unknown metrics {bad} for problem {self.problem!r}; valid: {', '.join(valid)}")
        if any(m.startswith("dnsmos_") for m in self.metrics) and not self.dnsmos:
            from ..metrics.dnsmos import HOW_TO_GET, bundled_model_dir

            if bundled_model_dir() is None:
                raise ValueError(HOW_TO_GET)
        if not self.studies:
            raise ValueError("the experiment has no [[study]] blocks")
        for st in self.studies:
            if not st.solvers:
                raise ValueError(f"study {st.name!r} lists no solvers")
            for spec in st.solvers:
                solver_from_spec(spec)
            for sched in st.schedules:
                if is_grid_file(sched):  # a grid file (samplerlab calibrate): its levels as they are
                    GridFile.read(sched)
                    if any(Transform.parse(tr).kind is not TransformKind.NONE for tr in st.transforms):
                        raise ValueError(f"study {st.name!r}: the grid file {sched} takes no transforms")
                elif sched != "base":
                    SHAPES.get(sched)
            for tr in st.transforms:
                Transform.parse(tr)
            try:
                if Normalisation.parse(st.normalisation) is Normalisation.DIFFUSION and self.process != "ouve":
                    raise ValueError(
                        f"normalisation 'diffusion' needs process 'ouve' (SGMSE+'s diffusion sigma), not {self.process!r}"
                    )
            except ValueError as err:
                raise ValueError(f"study {st.name!r}: {err}") from None
            if bool(st.steps) == bool(st.nfe):
                raise ValueError(f"study {st.name!r} must give exactly one of steps = [...] or nfe = [...]")
            if any(int(n) != n or n < 1 for n in st.steps + st.nfe):
                raise ValueError(f"study {st.name!r}: steps / nfe must be positive integers")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


MAX_SAMPLES = 10_000_000
MAX_STEPS = 100_000
Count = Annotated[int, Field(ge=1, le=MAX_SAMPLES)]
Steps = Annotated[int, Field(ge=1, le=MAX_STEPS)]
Seed = Annotated[int, Field(ge=0, lt=2**64)]
Scalar = bool | int | float | str


class ExperimentSchema(BaseModel):
    """The [experiment] table's types and ranges (``ExperimentConfig`` holds the values and their meaning)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    name: Annotated[str, Field(min_length=1)]
    problem: Annotated[str, Field(min_length=1)]
    process: str = "edm"
    process_params: dict[str, Scalar] = {}
    samples: Count | None = None
    seed: Seed = 0
    dtype: str = "float64"
    metrics: list[str] = []
    corpus: str = ""
    files: Count | None = None
    model: str = "gaussian"
    prior: str = "utterance"
    dnsmos: str = ""


class StudySchema(BaseModel):
    """A [[study]] table's types and ranges."""

    model_config = ConfigDict(extra="forbid", strict=True)
    name: Annotated[str, Field(min_length=1)]
    solvers: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]
    schedules: list[str] = ["base"]
    transforms: list[str] = ["none"]
    steps: list[Steps] = []
    nfe: list[Steps] = []
    normalisation: str = "marginal"


def _schema_error(path: Path, table: str, err: pydantic.ValidationError) -> ValueError:
    """The first problem of a pydantic error as one sentence naming the file, table, key and value."""
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "(table)"
    if first["type"] == "extra_forbidden":
        return ValueError(f"{path}: {table}: unknown key {key!r}")
    if first["type"] == "missing":
        return ValueError(f"{path}: {table}: {key} is required")
    return ValueError(f"{path}: {table}: {key} = {first.get('input')!r}: {first['msg'].lower()}")


def load_experiment(path: str | Path) -> ExperimentConfig:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"no experiment file at {path}") from None
    except IsADirectoryError:
        raise ValueError(f"{path} is a folder, not an experiment file") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a text (TOML) file") from None
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path} is not valid TOML: {err}") from None
    unknown = set(raw) - {"experiment", "study"}
    if unknown:
        raise ValueError(f"{path}: unknown tables {sorted(unknown)}; valid: [experiment], [[study]]")
    if not isinstance(raw.get("experiment", {}), dict) or not isinstance(raw.get("study", []), list):
        raise ValueError(f"{path}: write [experiment] as a table and each [[study]] as an array of tables")
    try:
        exp = ExperimentSchema.model_validate(raw.get("experiment", {})).model_dump()
    except pydantic.ValidationError as err:
        raise _schema_error(path, "[experiment]", err) from None
    studies = []
    for i, st in enumerate(raw.get("study", [])):
        try:
            studies.append(StudyConfig(**StudySchema.model_validate(st).model_dump()))
        except pydantic.ValidationError as err:
            label = f"[[study]] {i + 1}" + (f" ({st['name']!r})" if isinstance(st, dict) and "name" in st else "")
            raise _schema_error(path, label, err) from None
    config = ExperimentConfig(studies=studies, **exp)
    try:
        config.validate()
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    return config


@dataclass(frozen=True)
class Cell:
    study: str
    solver: str
    schedule: str
    transform: str
    steps: int | None
    nfe_budget: int | None
    normalisation: str = "marginal"

    @property
    def key(self) -> str:
        n = f"steps={self.steps}" if self.steps is not None else f"nfe={self.nfe_budget}"
        key = f"{self.study} | {self.solver} | {self.schedule} | {self.transform} | {n}"
        return key if self.normalisation == "marginal" else f"{key} | normalisation={self.normalisation}"

    @property
    def plain_base(self) -> bool:
        """The base process itself (its own schedule, no steepness), whatever the normalisation."""
        return self.schedule == "base" and not self.transform.startswith("steepness")

    @property
    def config_label(self) -> str:
        return f"{self.solver} / {self.schedule} / {self.transform}"

    @property
    def work_key(self) -> str:
        """What the cell computes, whichever study lists it: cells with the same work key share one result
        (the plain base under either normalisation is one process)."""
        cell = dataclasses.replace(self, normalisation="marginal") if self.plain_base else self
        return cell.key.split(" | ", 1)[1]


def cells_of(config: ExperimentConfig) -> list[Cell]:
    out = []
    for st in config.studies:
        for solver in st.solvers:
            for sched in st.schedules:
                for tr in st.transforms:
                    label = Transform.parse(tr).label()
                    for n in st.steps:
                        out.append(Cell(st.name, solver, sched, label, int(n), None, st.normalisation))
                    for b in st.nfe:
                        out.append(Cell(st.name, solver, sched, label, None, int(b), st.normalisation))
    return out


def process_for(cell: Cell, base: Process) -> tuple[Process, Transform]:
    """The process a cell samples (``base`` with its schedule shape and steepness) and its transform."""
    tr = Transform.parse(cell.transform)
    steep = tr.value if tr.kind is TransformKind.STEEPNESS else 1.0
    if is_grid_file(cell.schedule) or (cell.schedule == "base" and steep == 1.0):
        return base, tr
    shape = base.name if cell.schedule == "base" else cell.schedule
    if shape not in SHAPES:
        raise ValueError(f"process {base.name!r} has no schedule shape of its own; name one of {SHAPES.names()}")
    return ScheduledProcess.swap(base, shape, steep, cell.normalisation), tr
