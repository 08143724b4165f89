"""Time discretisations as data: descending 1-D float64 tensors of noise levels sigma.

A grid of ``num_steps`` steps has ``num_steps + 1`` levels. With
``final_zero=True`` (the default) the last level is 0, reached by the solver's
final step (Karras et al. 2022, Alg. 1: t_N = 0), and the other ``num_steps``
levels run from sigma_max to sigma_min; otherwise all ``num_steps + 1`` levels
run from sigma_max down to sigma_min.

The range comes from the process (sigma(t_max), sigma(t_min)) unless given.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import Tensor

from .processes import Process
from .registry import Registry, parse_spec

__all__ = [
    "GridError",
    "validate_grid",
    "karras",
    "uniform_time",
    "quadratic_time",
    "time_steps",
    "logsnr_uniform",
    "exponential",
    "polyexponential",
    "from_list",
    "flow",
    "flux",
    "shift_levels",
    "shift_times",
    "flux_mu",
    "image_seq_len",
    "saved",
    "saved_grid_path",
    "GridFile",
    "is_grid_file",
    "GRIDS",
    "make_grid",
]


class GridError(ValueError):
    """An invalid noise-level grid."""


def validate_grid(sigmas, process: Process | None = None) -> Tensor:
    """Return ``sigmas`` as a float64 tensor after checking it is a usable grid.

    A grid is 1-D, has at least two levels, is finite, non-negative, strictly
    decreasing, and only its last level may be 0. With a process, the last
    level must be reachable by it (VE never reaches 0).
    """
    g = torch.as_tensor(sigmas, dtype=torch.float64).detach().cpu()
    if g.ndim != 1 or len(g) < 2:
        raise GridError(f"a grid needs at least 2 levels (1 step) in a 1-D sequence, got shape {tuple(g.shape)}")
    if not bool(torch.isfinite(g).all()):
        raise GridError(f"grid has non-finite levels: {g.tolist()}")
    if bool((g < 0).any()):
        raise GridError(f"grid has negative levels: {[v for v in g.tolist() if v < 0]}")
    steps = g[1:] - g[:-1]
    if not bool((steps < 0).all()):
        bad = int(torch.nonzero(steps >= 0)[0])
        raise GridError(
            f"grid must be strictly decreasing; level {bad} ({g[bad]:g}) -> level {bad + 1} ({g[bad + 1]:g})"
        )
    if process is not None:
        process.check_sigma_reachable(float(g[-1]))
    return g


MAX_GRID_STEPS = 100_000  # as solvers.base.MAX_STEPS: more is a typo, and 10^9 levels would need ~24 GB


def _range(process: Process | None, sigma_min, sigma_max) -> tuple[float, float]:
    if sigma_min is None or sigma_max is None:
        if process is None:
            raise ValueError("give sigma_min and sigma_max, or a process to take them from")
        sigma_min = process.sigma_min if sigma_min is None else sigma_min
        sigma_max = process.sigma_max if sigma_max is None else sigma_max
    if not (math.isfinite(sigma_min) and math.isfinite(sigma_max) and 0 < sigma_min < sigma_max):
        raise GridError(f"need 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
    return float(sigma_min), float(sigma_max)


def _ramp(num_steps: int, final_zero: bool) -> Tensor:
    """Positions in [0, 1] of the non-final levels."""
    integral = isinstance(num_steps, int) or (isinstance(num_steps, float) and num_steps.is_integer())
    if isinstance(num_steps, bool) or not integral:
        raise GridError(f"num_steps must be a positive integer, got {num_steps!r}")
    if not 1 <= num_steps <= MAX_GRID_STEPS:
        raise GridError(f"num_steps must be a positive integer <= {MAX_GRID_STEPS}, got {num_steps!r}")
    n = num_steps if final_zero else num_steps + 1
    if n == 1:
        return torch.zeros(1, dtype=torch.float64)
    return torch.linspace(0, 1, n, dtype=torch.float64)


def _finish(levels: Tensor, final_zero: bool, process: Process | None, ends=None) -> Tensor:
    if ends is not None:  # pin the endpoints against rounding in the formulas
        levels[0] = ends[1]
        if len(levels) > 1:
            levels[-1] = ends[0]
    if final_zero:
        levels = torch.cat([levels, levels.new_zeros(1)])
    return validate_grid(levels, process)


def karras(
    num_steps: int,
    process: Process | None = None,
    *,
    sigma_min=None,
    sigma_max=None,
    rho: float = 7.0,
    final_zero: bool = True,
) -> Tensor:
    """sigma_i = (sigma_max^(1/rho) + i/(N-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho (Karras et al. 2022, eq. 5)."""
    lo, hi = _range(process, sigma_min, sigma_max)
    if not (isinstance(rho, (int, float)) and math.isfinite(rho) and rho > 0):
        raise GridError(f"karras rho must be a finite number > 0, got {rho!r}")
    r = _ramp(num_steps, final_zero)
    try:
        levels = (hi ** (1 / rho) + r * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho
    except OverflowError:
        levels = None
    if levels is None or not bool(torch.isfinite(levels).all()):
        raise GridError(f"karras rho={rho!r} is too small for sigma_max={hi:g}: sigma_max^(1/rho) overflows")
    return _finish(levels, final_zero, process, (lo, hi))


def polyexponential(
    num_steps: int,
    process: Process | None = None,
    *,
    sigma_min=None,
    sigma_max=None,
    rho: float = 1.0,
    final_zero: bool = True,
) -> Tensor:
    """log sigma_i = log sigma_min + (1 - i/(N-1))^rho (log sigma_max - log sigma_min): rho = 1 is geometric,
    rho > 1 puts more levels near sigma_min. This is the polyexponential grid of Crowson's k-diffusion, where
    the name comes from (until samplerlab 0.2.0 rho was applied to i/(N-1) instead, the opposite grid)."""
    if not (rho > 0 and math.isfinite(rho)):
        raise GridError(f"polyexponential rho must be a finite number > 0, got {rho!r}")
    lo, hi = _range(process, sigma_min, sigma_max)
    r = (1 - _ramp(num_steps, final_zero)) ** rho
    levels = lo * torch.exp(r * math.log(hi / lo))
    return _finish(levels, final_zero, process, (lo, hi))


def exponential(
    num_steps: int, process: Process | None = None, *, sigma_min=None, sigma_max=None, final_zero=True
) -> Tensor:
    """Geometric sigmas: uniform in log sigma."""
    return polyexponential(num_steps, process, sigma_min=sigma_min, sigma_max=sigma_max, rho=1.0, final_zero=final_zero)


def logsnr_uniform(
    num_steps: int, process: Process | None = None, *, sigma_min=None, sigma_max=None, final_zero=True
) -> Tensor:
    """Uniform in log-SNR lambda = log(s / (s sigma)) = -log sigma (Lu et al. 2022, Sec. 3.3 "logSNR").

    Since every process shares x_hat's SNR 1/sigma^2, this equals the geometric grid.
    """
    lo, hi = _range(process, sigma_min, sigma_max)
    lam = -math.log(hi) + _ramp(num_steps, final_zero) * (math.log(hi) - math.log(lo))
    return _finish(torch.exp(-lam), final_zero, process, (lo, hi))


def time_steps(
    num_steps: int,
    process: Process | None = None,
    *,
    offset: float = 1.0,
    power: float = 1.0,
    final_zero: bool = True,
) -> Tensor:
    """Steps in the process's time t, then sigma_i = sigma(t_i):

        t_i = offset * (t_min + (T - t_min) (1 - r_i)^power),   r_i = 0 .. 1 over the non-final levels.

    power = 1 is uniform in t (Song et al. 2021, Sec. 4); power > 1 compresses the steps toward the end of
    sampling, a power warp (power = 2 is DDIM's quadratic spacing, Song et al. 2021a, App. D.2);
    offset < 1 scales every time step by alpha = offset and reads sigma from the unmodified schedule, so
    sampling starts lower and each step removes less noise (the timestep-offset modification).
    """
    if process is None:
        raise ValueError("time-based grids need a process: its sigma(t) maps times to noise levels")
    if not 0 < offset <= 1:
        raise GridError(f"offset must be in (0, 1], got {offset}")
    if not power > 0:
        raise GridError(f"power must be positive, got {power}")
    r = _ramp(num_steps, final_zero)
    t = offset * (process.t_min + (process.t_max - process.t_min) * (1 - r) ** power)
    return _finish(process.sigma(t), final_zero, process)


def uniform_time(num_steps: int, process: Process | None = None, *, final_zero: bool = True) -> Tensor:
    """Uniform in the process's time from T to t_min = t_eps (Song et al. 2021, Sec. 4)."""
    return time_steps(num_steps, process, final_zero=final_zero)


def quadratic_time(num_steps: int, process: Process | None = None, *, final_zero: bool = True) -> Tensor:
    """Quadratic time spacing, dense near t_min (Song et al. 2021a, DDIM, Appendix D.2): t - t_eps ∝ (1 - r)^2."""
    return time_steps(num_steps, process, power=2.0, final_zero=final_zero)


# -- flow-matching grids and the resolution shift ------------------------------------------------------


def _check_shift(shift) -> float:
    if isinstance(shift, bool) or not isinstance(shift, (int, float)) or not (math.isfinite(shift) and shift > 0):
        raise GridError(f"shift must be a finite number > 0, got {shift!r}")
    return float(shift)


def shift_times(t: Tensor, shift: float) -> Tensor:
    """SD3's resolution shift of flow times, t -> shift t / (1 + (shift - 1) t) (Esser et al. 2024, Sec. 5.3.2,
    eq. 23, shift = sqrt(m / n) for m pixels in place of n): it keeps 0 and 1 and moves the steps toward t = 1
    (more noise) for shift > 1. Under rectified flow sigma = t / (1 - t), and the map is sigma -> shift sigma
    (``shift_levels``), which is how it applies to every process."""
    shift = _check_shift(shift)
    return shift * t / (1 + (shift - 1) * t)


def shift_levels(sigmas, shift: float) -> Tensor:
    """Every level times ``shift``: the resolution shift in sigma form, for any grid and process. The SNR of a
    level falls by shift^2 (Esser et al. 2024, eq. 23: the shift that keeps the uncertainty of an image of
    shift^2 times the pixels); under rectified flow it is ``shift_times``. Returns a validated grid."""
    return validate_grid(torch.as_tensor(sigmas, dtype=torch.float64) * _check_shift(shift))


def image_seq_len(height: int, width: int, vae_scale: int = 8, patch: int = 2) -> int:
    """Tokens of an image for the Flux / SD3 transformers: (H / (vae_scale patch)) (W / (vae_scale patch))
    latent patches; 4096 at 1024 x 1024."""
    for name, v in (("height", height), ("width", width), ("vae_scale", vae_scale), ("patch", patch)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise GridError(f"{name} must be a positive integer, got {v!r}")
    return (height // (vae_scale * patch)) * (width // (vae_scale * patch))


def flux_mu(
    seq_len: int, base_seq_len: int = 256, max_seq_len: int = 4096, base_shift: float = 0.5, max_shift: float = 1.15
) -> float:
    """Flux's resolution-dependent shift: mu rises linearly in the image's token count from ``base_shift`` at
    ``base_seq_len`` to ``max_shift`` at ``max_seq_len`` (Black Forest Labs' Flux reference sampling; the
    defaults of its released scheduler configuration), and the times are shifted by exp(mu)."""
    if not base_seq_len < max_seq_len:
        raise GridError(f"need base_seq_len < max_seq_len, got {base_seq_len}, {max_seq_len}")
    slope = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    return base_shift + slope * (seq_len - base_seq_len)


def _flow_levels(t: Tensor, process: Process | None, sigma_max, final_zero: bool) -> Tensor:
    """Flow times (descending, the first 1) as sigma levels t / (1 - t), the first (t = 1, sigma = inf: pure
    noise) replaced by ``sigma_max`` (default the process's, rectified flow's t_max = 1 - 1e-4)."""
    if sigma_max is None:
        if process is None:
            raise ValueError("give sigma_max, or a process to take it from")
        sigma_max = process.sigma_max
    if not (math.isfinite(sigma_max) and sigma_max > 0):
        raise GridError(f"need a finite sigma_max > 0, got {sigma_max!r}")
    levels = torch.full_like(t, float(sigma_max))
    levels[1:] = t[1:] / (1 - t[1:])
    if len(levels) > 1 and not levels[1] < sigma_max:
        raise GridError(
            f"the flow grid's second level ({float(levels[1]):.4g}, t = {float(t[1]):.6g}) is not below its start "
            f"sigma_max = {sigma_max:.4g}: start higher (a process with t_max closer to 1, or sigma_max=) or "
            "take fewer steps or a smaller shift"
        )
    return _finish(levels, final_zero, process)


def _flow_start(num_steps: int, final_zero: bool) -> int:
    _ramp(num_steps, final_zero)  # checks num_steps
    return num_steps if final_zero else num_steps + 1


def flow(
    num_steps: int,
    process: Process | None = None,
    *,
    shift: float = 1.0,
    mu: float | None = None,
    t_min: float | None = None,
    sigma_max=None,
    final_zero: bool = True,
) -> Tensor:
    """The flow-matching default grid: uniform in flow time t, shifted, as diffusers' FlowMatchEulerDiscrete
    scheduler lays it for SD3 (Esser et al. 2024): t_i = linspace(1, t_end, N), then shifted.

    Static shift (``mu`` None): t_end = shift_times(t_min) and t_i = shift_times(linspace(1, t_end, N), shift),
    so the end point is shifted twice, as diffusers computes it. Dynamic shift (``mu``): t_i =
    shift_times(linspace(1, t_min, N), exp(mu)). ``t_min`` defaults to 1/1000 (diffusers' 1000 training
    steps). Levels are sigma = t / (1 - t) on any process; t = 1 (pure noise, sigma = inf) becomes
    ``sigma_max`` (the process's, for rectified flow t_max = 1 - 1e-4).
    """
    n = _flow_start(num_steps, final_zero)
    if mu is not None and shift != 1.0:
        raise GridError(f"give the flow grid a static shift or a dynamic mu, not both (shift={shift!r}, mu={mu!r})")
    t_min = 1e-3 if t_min is None else t_min
    if isinstance(t_min, bool) or not isinstance(t_min, (int, float)) or not 0 < t_min < 1:
        raise GridError(f"t_min must be in (0, 1), got {t_min!r}")
    if mu is None:
        t_end = float(shift_times(torch.tensor(t_min, dtype=torch.float64), shift))
        t = shift_times(torch.linspace(1, t_end, n, dtype=torch.float64), shift)
    else:
        t = shift_times(torch.linspace(1, t_min, n, dtype=torch.float64), _mu_shift(mu))
    return _flow_levels(t, process, sigma_max, final_zero)


def _mu_shift(mu) -> float:
    if isinstance(mu, bool) or not isinstance(mu, (int, float)) or not math.isfinite(mu) or abs(mu) > 50:
        raise GridError(f"mu must be a finite number in [-50, 50] (the shift is exp(mu)), got {mu!r}")
    return math.exp(mu)


def flux(
    num_steps: int,
    process: Process | None = None,
    *,
    mu: float | None = None,
    height: int = 1024,
    width: int = 1024,
    sigma_max=None,
    final_zero: bool = True,
) -> Tensor:
    """Flux's grid: t_i = shift_times(linspace(1, 1/N, N), exp(mu)), as the Flux pipelines lay it, with ``mu``
    from the image size (``flux_mu(image_seq_len(height, width))``: 1.15 at 1024 x 1024) unless given.
    Levels as in ``flow``."""
    n = _flow_start(num_steps, final_zero)
    if mu is None:
        mu = flux_mu(image_seq_len(height, width))
    t = shift_times(torch.linspace(1, 1 / n, n, dtype=torch.float64), _mu_shift(mu))
    return _flow_levels(t, process, sigma_max, final_zero)


def from_list(values: Sequence[float], process: Process | None = None) -> Tensor:
    """A user-given grid, validated."""
    return validate_grid(values, process)


def saved_grid_path(name: str, directory=None) -> Path:
    """Where a named grid lives: DIRECTORY/NAME.json, DIRECTORY = $SAMPLERLAB_GRID_DIR or ./grids.
    A name ending in .json is taken as a path."""
    if name.endswith(".json"):
        return Path(name)
    if not name or any(c in name for c in "/\\") or name.startswith("."):
        raise ValueError(f"bad grid name {name!r}: use letters, digits, '-', '_' (or give a path ending in .json)")
    return Path(directory or os.environ.get("SAMPLERLAB_GRID_DIR", "grids")) / f"{name}.json"


GRID_FILE_FORMAT = 1  # the newest grid-file layout this version reads and writes


@dataclass(frozen=True)
class GridFile:
    """A grid saved to JSON: its levels, optionally the levels its model is evaluated at (a calibrated level
    shift, ``denoisers.LevelShift``), and where it came from (``provenance``: model fingerprint, process,
    solver spec, NFE, method, loss, seeds, samplerlab version, ...). ``samplerlab calibrate`` and
    ``samplerlab optimise-steps`` write them; any grid option takes the path."""

    sigmas: tuple[float, ...]
    model_sigmas: tuple[float, ...] | None = None
    provenance: dict = field(default_factory=dict)
    solver_coefficients: tuple[float, ...] | None = None  # calibrated solver coefficients (``configure``)

    def __post_init__(self):
        validate_grid(self.sigmas)
        if self.model_sigmas is not None:
            positive = sum(1 for s in self.sigmas if s > 0)
            m = torch.as_tensor(self.model_sigmas, dtype=torch.float64)
            if len(self.model_sigmas) != positive or not bool(torch.isfinite(m).all() and (m > 0).all()):
                raise GridError(
                    f"model_sigmas must be {positive} finite positive levels (one per positive grid level), "
                    f"got {list(self.model_sigmas)}"
                )
        if self.solver_coefficients is not None:
            c = torch.as_tensor(self.solver_coefficients, dtype=torch.float64)
            if len(c) != self.num_steps or not bool(torch.isfinite(c).all()):
                raise GridError(
                    f"solver_coefficients must be {self.num_steps} finite numbers (one per step), "
                    f"got {list(self.solver_coefficients)}"
                )

    @property
    def num_steps(self) -> int:
        return len(self.sigmas) - 1

    def misfit(self, solver, steps: int | None) -> str | None:
        """Why this file cannot serve ``solver`` at ``steps`` steps (None: it can)."""
        if steps is not None and steps != self.num_steps:
            return f"the grid file has {self.num_steps} steps; {solver.name} takes {steps}"
        if self.solver_coefficients is not None and solver.describe() != self.provenance.get("solver"):
            return f"the grid file's solver coefficients are for {self.provenance.get('solver')}"
        return None

    def configure(self, solver):
        """``solver`` with the file's calibrated coefficients, if it has any (they belong to the solver the file
        was made for, ``provenance["solver"]``: another solver is refused by name); else ``solver`` itself."""
        if self.solver_coefficients is None:
            return solver
        made_for = self.provenance.get("solver")
        if solver.describe() != made_for:
            raise GridError(
                f"this grid file's solver coefficients are for {made_for}, not {solver.describe()}: use that solver"
            )
        import dataclasses

        return dataclasses.replace(solver, coefficients=self.solver_coefficients)

    def tensor(self, process: Process | None = None) -> Tensor:
        """The levels, checked for ``process``: a file that records the process it was made for (``provenance``'s
        "process") is refused under another, before any work: its levels, and a solver in the process's time,
        were fitted to that process (a rectified-flow grid starts at t_max = 1 - 1e-4, sigma 9999)."""
        made_for = self.provenance.get("process")
        if process is not None and made_for is not None and made_for != process.name:
            raise GridError(
                f"this grid file was made for the {made_for!r} process, not {process.name!r}: sample under "
                f"{made_for} (e.g. --process {made_for}) or calibrate a grid for {process.name}"
            )
        return validate_grid(self.sigmas, process)

    def to_json(self) -> str:
        payload = {"format": GRID_FILE_FORMAT, "sigmas": list(self.sigmas), "num_steps": self.num_steps}
        if self.model_sigmas is not None:
            payload["model_sigmas"] = list(self.model_sigmas)
        if self.solver_coefficients is not None:
            payload["solver_coefficients"] = list(self.solver_coefficients)
        return json.dumps({**payload, "provenance": self.provenance}, indent=2) + "\n"

    def write(self, path) -> Path:
        """Write atomically: a reader sees the old file or the whole new one."""
        from .io import atomic_write_text

        atomic_write_text(path, self.to_json())
        return Path(path)

    @classmethod
    def read(cls, path) -> "GridFile":
        """Read and check a grid file; every problem is a ``GridError`` naming the file."""
        path = Path(path)
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise GridError(f"no grid file at {path}") from None
        except (UnicodeDecodeError, ValueError) as err:
            raise GridError(f"grid file {path} is malformed: not valid JSON ({err})") from None
        if not isinstance(payload, dict) or "sigmas" not in payload:
            raise GridError(f"grid file {path} is malformed: expected a JSON object with 'sigmas'")
        if payload.get("format", 1) not in range(1, GRID_FILE_FORMAT + 1):
            raise GridError(
                f"grid file {path} has format {payload.get('format')!r}; this samplerlab reads formats up to "
                f"{GRID_FILE_FORMAT}: upgrade samplerlab"
            )
        # files of samplerlab 0.2 kept their provenance at the top level
        known = {"format", "sigmas", "model_sigmas", "num_steps", "provenance", "solver_coefficients"}
        provenance = payload.get("provenance") or {k: v for k, v in payload.items() if k not in known}
        try:
            model, coefficients = payload.get("model_sigmas"), payload.get("solver_coefficients")
            return cls(
                tuple(float(v) for v in payload["sigmas"]),
                None if model is None else tuple(float(v) for v in model),
                dict(provenance),
                None if coefficients is None else tuple(float(v) for v in coefficients),
            )
        except GridError as err:
            raise GridError(f"grid file {path}: {err}") from None
        except (TypeError, ValueError) as err:
            raise GridError(f"grid file {path} is malformed: {err}") from None


def saved(num_steps: int, process: Process | None = None, *, name: str, directory=None) -> Tensor:
    """A saved grid file (``samplerlab calibrate``, ``samplerlab optimise-steps``), by name or path."""
    path = saved_grid_path(name, directory)
    try:
        grid = GridFile.read(path)
    except GridError as err:
        if not path.exists():
            raise GridError(f"no saved grid {name!r} at {path}") from None
        raise GridError(str(err).replace("grid file", "saved grid", 1)) from None
    if num_steps is not None and grid.num_steps != num_steps:
        raise GridError(
            f"saved grid {name!r} has {grid.num_steps} steps, not {num_steps}: it was made for "
            f"{grid.provenance.get('solver', 'its solver')} at {grid.provenance.get('nfe', '?')} NFE"
        )
    try:
        return grid.tensor(process)
    except GridError as err:
        raise GridError(f"saved grid {name!r}: {err}") from None


def is_grid_file(name: str) -> bool:
    """Grid options take a registered name or the path of a grid file (ending in .json)."""
    return str(name).endswith(".json")


GRIDS: Registry[Callable[..., Tensor]] = Registry("grid")
GRIDS.register("karras")(karras)
GRIDS.register("uniform-time")(uniform_time)
GRIDS.register("quadratic-time")(quadratic_time)
GRIDS.register("time")(time_steps)
GRIDS.register("saved")(saved)
GRIDS.register("logsnr")(logsnr_uniform)
GRIDS.register("exponential")(exponential)
GRIDS.register("polyexponential")(polyexponential)
GRIDS.register("flow")(flow)
GRIDS.register("flux")(flux)

_SHIFTS_ITSELF = (flow, flux)  # grids whose shift acts on flow time and keeps t = 1


def make_grid(name: str, num_steps: int, process: Process, /, **params) -> Tensor:
    """Build a registered grid by name or spec (``flow:shift=3``; configuration / CLI boundary), or read a grid
    file (a path ending in .json, which must have ``num_steps`` steps). ``shift`` works with every grid: the
    flow grids shift their times, keeping the pure-noise start; any other grid has every level multiplied
    (``shift_levels``)."""
    if is_grid_file(name):
        if params:
            raise ValueError(f"a grid file takes no grid parameters, got {params}")
        return saved(num_steps, process, name=name)
    name, spec_params = parse_spec(name, "grid", "flow:shift=3")
    params = {**spec_params, **params}
    fn = GRIDS.get(name)
    shift = None if fn in _SHIFTS_ITSELF else params.pop("shift", None)
    try:
        grid = fn(num_steps, process, **params)
    except TypeError as err:
        raise ValueError(f"bad parameters {params} for grid {name!r}: {err}") from err
    return grid if shift is None else validate_grid(shift_levels(grid, shift), process)
