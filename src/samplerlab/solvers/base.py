"""What every solver shares, so that a solver file is its paper's update formula:

- ``StepContext``: the counted denoiser, the process's scale s, the score, the noise streams;
- ``Solver``: the interface and the nature every solver states (order, calls per step, stochastic);
- ``DenoisedStep``: the template of steps written on x_hat = x / s that open with one model call
  D(x_hat; sigma_i): the base evaluates, takes the final denoising step on a step to sigma = 0 and
  rescales the result; the solver writes ``update``;
- ``History`` and ``effective_order``: multistep history and the order a step can use (limited by the
  history, and lowered near the end of short runs);
- the registry and the spec parser of the configuration / CLI boundary.
"""

from __future__ import annotations

import enum
import math
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass, field, fields
from typing import Any, Callable, ClassVar

import torch
from torch import Tensor

from ..denoisers import Denoiser
from ..noise import SampleNoise
from ..processes import Process
from ..registry import Registry, parse_spec, parse_value  # noqa: F401 (parse_value: re-exported)

__all__ = [
    "StepContext",
    "StepOutput",
    "Solver",
    "EtaNoise",
    "DenoisedStep",
    "FinalStep",
    "History",
    "HistorySolver",
    "effective_order",
    "extrapolation_weights",
    "combine",
    "score_from_denoised",
    "SOLVERS",
    "make_solver",
    "parse_solver_spec",
    "solver_from_spec",
    "parse_value",
]


def combine(terms) -> Tensor:
    """sum_j c_j v_j of (float c_j, tensor v_j) pairs in one pass of fused multiply-adds: multistep solvers
    reduce their update to scalar coefficients first, so a step costs one tensor operation per term."""
    (c0, v0), *rest = terms
    if c0 == 1 and rest:  # x + c v in one operation, the usual opening of an Adams step
        (c1, v1), *rest = rest
        out = torch.add(v0, v1, alpha=float(c1))
    else:
        out = v0 * float(c0)
    for c, v in rest:
        out.add_(v, alpha=float(c))
    return out


def score_from_denoised(x: Tensor, x0, s, sigma):
    """grad_x log p_t(x) = (s D(x / s; sigma) - x) / (s sigma)^2 in process coordinates (Karras et al. 2022,
    eq. 3 with x = s x_hat); s and sigma are floats or tensors broadcast against x."""
    return (s * x0 - x) / (s * sigma) ** 2


@dataclass
class StepContext:
    """What a step may use: the (counted) denoiser, the process, the grid and the noise streams.

    States ``x`` live in the process's coordinates x = s(t) x_hat; the denoiser
    takes x_hat = x / s. For s = 1 processes (EDM, VE) the two coincide.
    """

    denoiser: Denoiser
    process: Process
    sigmas: Tensor  # float64, descending, validated
    noise: SampleNoise | None = None
    cond: dict = field(default_factory=dict)
    solver_name: str = ""
    # s(t(sigma)) and t(sigma) of the levels a run visits, computed once: a scalar process lookup costs a few
    # torch operations, and solvers ask for the same levels several times per step
    _scales: dict = field(default_factory=dict, repr=False)
    _times: dict = field(default_factory=dict, repr=False)

    @property
    def num_steps(self) -> int:
        return len(self.sigmas) - 1

    def sigma(self, i: int) -> float:
        return float(self.sigmas[i])

    def t(self, sigma: float) -> float:
        t = self._times.get(sigma)
        if t is None:
            t = self._times[sigma] = float(self.process.t_of_sigma(sigma))
        return t

    def scale(self, sigma: float) -> float:
        """s(t(sigma))."""
        s = self._scales.get(sigma)
        if s is None:
            s = self._scales[sigma] = float(self.process.scale(sigma))
        return s

    def denoise(self, x_hat: Tensor, sigma) -> Tensor:
        """D(x_hat, sigma) with the run's conditioning; sigma is a float or one value per sample."""
        return self.denoiser(x_hat, torch.as_tensor(sigma, dtype=x_hat.dtype, device=x_hat.device), **self.cond)

    def evaluate(self, x: Tensor, i: int) -> tuple[float, float, Tensor, Tensor]:
        """The opening of most steps: (sigma_i, sigma_{i+1}, x_hat = x / s, D(x_hat, sigma_i))."""
        sigma, sigma_next = self.sigma(i), self.sigma(i + 1)
        s = self.scale(sigma)
        x_hat = x if s == 1.0 else x / s  # s = 1 under EDM and VE: no copy (solvers never write to x_hat)
        return sigma, sigma_next, x_hat, self.denoise(x_hat, sigma)

    def finish(self, x0: Tensor, state: Any = None) -> "StepOutput":
        """A step that lands on sigma = 0 returns the data estimate (the final denoising step)."""
        return StepOutput(x0 * self.scale(0.0), x0, state)

    def final_step(self, x: Tensor, i: int, state: Any = None) -> "StepOutput":
        """The step from sigma_i to 0: D(x_hat; sigma_i), Tweedie's posterior mean (Song et al. 2021, App. G)."""
        sigma = self.sigma(i)
        return self.finish(self.denoise(x / self.scale(sigma), sigma), state)

    def pf_ode_dt(self, x: Tensor, sigma: float) -> tuple[Tensor, Tensor]:
        """dx/dt of the probability-flow ODE in process coordinates, and D.

        Karras et al. 2022, eq. 4 with grad log p = (D - x_hat) / sigma^2:
        dx/dt = (s'/s + sigma'/sigma) x - (s sigma'/sigma) D(x / s; sigma).
        """
        p = self.process
        t = p.t_of_sigma(sigma)
        s, ds, dsig = float(p.s(t)), float(p.ds_dt(t)), float(p.dsigma_dt(t))
        x0 = self.denoise(x / s, sigma)
        d = (ds / s + dsig / sigma) * x - (s * dsig / sigma) * x0
        return d, x0

    def score(self, x: Tensor, sigma: float) -> tuple[Tensor, Tensor]:
        """(grad log p_t(x), D) at level sigma, x in process coordinates."""
        s = self.scale(sigma)
        x0 = self.denoise(x / s, sigma)
        return score_from_denoised(x, x0, s, sigma), x0

    def randn_like(self, x: Tensor) -> Tensor:
        if self.noise is None:
            raise ValueError(f"solver {self.solver_name!r} is stochastic: pass seeds / a SampleNoise to sample()")
        return self.noise.randn_like(x)


@dataclass
class StepOutput:
    x: Tensor  # state at the next grid level (process coordinates)
    x0_hat: Tensor  # the last data estimate made in the step
    state: Any = None  # solver history carried to the next step (multistep methods)


class Solver(ABC):
    """One step (or one family of steps) of a sampler.

    Class attributes state the solver's nature: ``order`` (of the global error
    of its deterministic part), ``calls_per_step`` (model calls of a regular
    step) and ``stochastic``.
    """

    name: ClassVar[str] = ""
    order: ClassVar[int] = 1
    calls_per_step: ClassVar[int] = 1
    stochastic: ClassVar[bool] = False
    adaptive: ClassVar[bool] = False  # steps chosen by error control inside each grid interval
    bench_tolerances: ClassVar[tuple] = ()  # adaptive solvers: the tolerances a benchmark sweeps by default

    def init_state(self, ctx: StepContext) -> Any:
        return None

    @abstractmethod
    def step(self, ctx: StepContext, x: Tensor, i: int, state: Any) -> StepOutput:
        """Advance x from level i to level i + 1 of ctx.sigmas."""

    def nfe(self, num_steps: int, final_zero: bool = True) -> int:
        """Model calls for a grid of ``num_steps`` steps (ending at 0 when ``final_zero``)."""
        return self.calls_per_step * num_steps

    def steps_for_nfe(self, nfe: int, final_zero: bool = True) -> int | None:
        """Most steps whose NFE fits the budget; None when not even one step fits. A bisection (NFE grows
        with the steps), so a huge budget answers at once; budgets over ``MAX_STEPS`` steps are refused."""
        if self.nfe(1, final_zero) > nfe:
            return None
        lo, hi = 1, 2
        while self.nfe(hi, final_zero) <= nfe:  # lo fits, hi does not
            lo, hi = hi, hi * 2
            if lo > MAX_STEPS:
                raise ValueError(f"an NFE budget of {nfe} means more than {MAX_STEPS} steps of {self.name}")
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if self.nfe(mid, final_zero) <= nfe else (lo, mid)
        return lo

    def steps_within(self, nfe: int, label: str | None = None) -> int:
        """``steps_for_nfe``, or an error naming the solver (``label``: its spec) when no step fits."""
        steps = self.steps_for_nfe(nfe)
        if steps is None:
            raise ValueError(f"{label or self.describe()} cannot run within {nfe} NFE")
        return steps

    @property
    def convergence_order(self) -> int:
        """Global order of the deterministic part, as the solver's paper proves it (tested empirically)."""
        return self.order

    def report(self, state: Any) -> dict:
        """Solver-specific figures for the result (e.g. accepted / rejected steps of adaptive solvers)."""
        return {}

    def with_tolerance(self, tol: float) -> "Solver":
        """Adaptive solvers: a copy at tolerance ``tol`` (benchmarks sweep it instead of an NFE budget)."""
        raise ValueError(f"{self.name} is not adaptive")

    def params(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)} if hasattr(self, "__dataclass_fields__") else {}

    # valid ranges of numeric parameters, (low, high) inclusive; None: unbounded but finite; math.inf: inf allowed
    PARAM_RANGES: ClassVar[dict[str, tuple]] = {}

    def check_parameters(self) -> None:
        """Every parameter of the type its field declares (float, int, bool, str, optionally None), finite
        and within ``PARAM_RANGES``; the error names the solver, the parameter, the value and what is valid.
        ``make_solver`` and ``sample`` call it, so a bad value never runs."""
        for f in fields(self) if hasattr(self, "__dataclass_fields__") else ():
            value = getattr(self, f.name)
            kinds = [k.strip() for k in str(f.type).split("|")]
            if value is None and "None" in kinds:
                continue
            base = kinds[0]
            ok = {
                "float": isinstance(value, (int, float)) and not isinstance(value, bool),
                "int": isinstance(value, int) and not isinstance(value, bool),
                "bool": isinstance(value, bool),
                "str": isinstance(value, str),
            }.get(base, True)  # other annotations (a Solver, a Corrector) are checked by the solver itself
            if not ok:
                raise ValueError(f"{self.name}: {f.name} must be {base}, got {value!r}")
            lo, hi = self.PARAM_RANGES.get(f.name, (None, None))
            infinite_ok = (value == math.inf and hi == math.inf) or (value == -math.inf and lo == -math.inf)
            if base in ("float", "int") and not math.isfinite(value) and not infinite_ok:
                raise ValueError(f"{self.name}: {f.name} must be finite, got {value!r}")
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                span = f"[{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"
                raise ValueError(f"{self.name}: {f.name} must be in {span}, got {value!r}")

    def describe(self) -> str:
        # unset optional parameters (None) are left out: "dpm-solver++(order=2, ...)" reads as before calibration
        p = ", ".join(f"{k}={v}" for k, v in self.params().items() if v is not None)
        return f"{self.name}({p})" if p else self.name


class EtaNoise:
    """Mixin of solvers whose fresh noise is scaled by a field ``eta``: stochastic exactly when eta > 0."""

    eta: float
    PARAM_RANGES: ClassVar[dict[str, tuple]] = {"eta": (0.0, None)}

    @property
    def stochastic(self) -> bool:
        return self.eta > 0


class DenoisedStep(Solver):
    """Template: a step on x_hat = x / s that opens with D(x_hat; sigma_i). A step to sigma = 0 returns that
    D (the final denoising step, first order); otherwise ``update`` gives x_hat at sigma_{i+1}, and the base
    rescales it by s(sigma_{i+1})."""

    def step(self, ctx: StepContext, x: Tensor, i: int, state: Any) -> StepOutput:
        sigma, sigma_next, x_hat, x0 = ctx.evaluate(x, i)
        if sigma_next == 0:
            data = self.final_update(ctx, i, sigma, x_hat, x0, state)
            return ctx.finish(x0 if data is None else data, state)
        x_hat_next, x0 = self.update(ctx, i, sigma, sigma_next, x_hat, x0, state)
        s = ctx.scale(sigma_next)
        return StepOutput(x_hat_next if s == 1.0 else x_hat_next * s, x0, state)

    def final_update(self, ctx: StepContext, i: int, sigma: float, x_hat: Tensor, x0: Tensor, state: Any):
        """The state at sigma = 0 of a solver whose last step keeps its order; None: D(x_hat; sigma), the
        first-order final denoising step."""
        return None

    @abstractmethod
    def update(
        self, ctx: StepContext, i: int, sigma: float, sigma_next: float, x_hat: Tensor, x0: Tensor, state: Any
    ) -> tuple[Tensor, Tensor]:
        """(x_hat at sigma_next > 0, the step's last data estimate) from x_hat and x0 = D(x_hat; sigma)."""


class FinalStep(enum.Enum):
    """The step from the smallest positive level to sigma = 0."""

    DENOISE = "denoise"  # return D(x_hat; sigma_min): first order, an O(sigma_min^2) error floor
    EXTRAPOLATE = "extrapolate"  # the solver's own update down to 0, where its variable stays finite

    @classmethod
    def parse(cls, value) -> "FinalStep":
        try:
            return value if isinstance(value, cls) else cls(value)
        except ValueError:
            raise ValueError(f"unknown final step {value!r}; valid: {', '.join(m.value for m in cls)}") from None


def extrapolation_weights(points: list[float], at: float = 0.0) -> list[float]:
    """Lagrange basis l_j(at) through ``points``: sum_j l_j(at) f(points_j) is the polynomial extrapolation."""
    out = []
    for j, pj in enumerate(points):
        w = 1.0
        for k, pk in enumerate(points):
            if k != j:
                w *= (at - pk) / (pj - pk)
        out.append(w)
    return out


@dataclass
class History:
    """Past model outputs for multistep methods: (lambda_j or another variable, m_j), newest last; ``plan``
    holds the run's per-step coefficients where the solver precomputes them (``grid_plan``)."""

    lams: list
    values: list
    plan: list | None = None

    def push(self, lam_j: float, m_j, keep: int) -> None:
        self.lams.append(lam_j)
        self.values.append(m_j)
        del self.lams[:-keep], self.values[:-keep]

    def newest(self, p: int) -> "History":
        return History(self.lams[-p:], self.values[-p:])


class HistorySolver(DenoisedStep):
    """A multistep solver: its state is the History of past model outputs."""

    def init_state(self, ctx: StepContext) -> History:
        return History([], [])


_PLANS: OrderedDict = OrderedDict()
_PLANS_LOCK = threading.Lock()
PLANS_KEPT = 32  # grids whose coefficients stay cached


def grid_plan(solver: "Solver", ctx: StepContext, build: Callable[[StepContext, int], Any]) -> list:
    """[build(ctx, i) for every step i]: the scalars of each step that depend only on the solver, the process
    and the grid (a multistep method's weights), computed once for every run on that grid, so that a step is
    tensor arithmetic alone. Keyed by the solver's and the process's parameters (their reprs) and the grid's
    levels; the most recent ``PLANS_KEPT`` grids are kept."""
    key = (type(solver), repr(solver), repr(ctx.process), ctx.sigmas.detach().cpu().numpy().tobytes())
    with _PLANS_LOCK:
        plan = _PLANS.get(key)
        if plan is not None:
            _PLANS.move_to_end(key)
            return plan
    plan = [build(ctx, i) for i in range(ctx.num_steps)]
    with _PLANS_LOCK:
        _PLANS[key] = plan
        while len(_PLANS) > PLANS_KEPT:
            _PLANS.popitem(last=False)
    return plan


MAX_STEPS = 100_000  # more steps than any sampler needs: a larger request is a typo, not a plan

LOWER_ORDER_FINAL_BELOW = 15  # runs shorter than this lower the order of their last steps


def effective_order(order: int, i: int, num_steps: int, available: int, lower_order_final: bool) -> int:
    """Order for step i: limited by the history available and, with ``lower_order_final``, by the steps left
    in runs of fewer than 15 steps, which stabilises few-step sampling (Lu et al. 2022b, Sec. 5)."""
    p = min(order, available)
    if lower_order_final and num_steps < LOWER_ORDER_FINAL_BELOW:
        p = min(p, num_steps - i)
    return max(p, 1)


SOLVERS: Registry[type[Solver]] = Registry("solver")


def parse_solver_spec(spec: str) -> tuple[str, dict]:
    """'dpm-solver++:order=3:multistep=false' -> ('dpm-solver++', {'order': 3, 'multistep': False})."""
    return parse_spec(spec, "solver", "unipc:order=3")


def solver_from_spec(spec: str, **overrides) -> Solver:
    name, params = parse_solver_spec(spec)
    return make_solver(name, **{**params, **overrides})


def make_solver(name: str, **params) -> Solver:
    """Build a registered solver by name or spec ('unipc:order=3'; configuration / CLI boundary), its
    parameters checked (``Solver.check_parameters``)."""
    if ":" in name:
        name, spec_params = parse_solver_spec(name)
        params = {**spec_params, **params}
    cls = SOLVERS.get(name)
    valid = list(getattr(cls, "__dataclass_fields__", {}))
    unknown = [k for k in params if valid and k not in valid]
    if unknown:
        raise ValueError(f"solver {name!r} has no parameter {unknown[0]!r}; valid parameters: {', '.join(valid)}")
    try:
        solver = cls(**params)
    except TypeError as err:
        raise ValueError(f"bad parameters {params} for solver {name!r}: {err}; valid parameters: {valid}") from None
    solver.check_parameters()
    return solver
