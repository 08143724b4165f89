"""What every solver shares: the step context, the solver interface, the registry."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..denoisers import Denoiser
from ..noise import SampleNoise
from ..registry import Registry
from ..processes import Process

__all__ = ["StepContext", "StepOutput", "Solver", "SOLVERS", "make_solver", "parse_solver_spec", "solver_from_spec", "parse_value"]


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

    @property
    def num_steps(self) -> int:
        return len(self.sigmas) - 1

    def sigma(self, i: int) -> float:
        return float(self.sigmas[i])

    def t(self, sigma: float) -> float:
        return float(self.process.t_of_sigma(sigma))

    def scale(self, sigma: float) -> float:
        """s(t(sigma))."""
        return float(self.process.scale(sigma))

    def denoise(self, x_hat: Tensor, sigma) -> Tensor:
        """D(x_hat, sigma) with the run's conditioning; sigma is a float or one value per sample."""
        return self.denoiser(x_hat, torch.as_tensor(sigma, dtype=x_hat.dtype, device=x_hat.device), **self.cond)

    def evaluate(self, x: Tensor, i: int) -> tuple[float, float, Tensor, Tensor]:
        """The opening of most steps: (sigma_i, sigma_{i+1}, x_hat = x / s, D(x_hat, sigma_i))."""
        sigma, sigma_next = self.sigma(i), self.sigma(i + 1)
        x_hat = x / self.scale(sigma)
        return sigma, sigma_next, x_hat, self.denoise(x_hat, sigma)

    def finish(self, x0: Tensor, state: Any = None) -> "StepOutput":
        """A step that lands on sigma = 0 returns the data estimate (the final denoising step)."""
        return StepOutput(x0 * self.scale(0.0), x0, state)

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
        """Most steps whose NFE fits the budget; None when not even one step fits."""
        best = None
        n = 1
        while self.nfe(n, final_zero) <= nfe:
            best = n
            n += 1
        return best

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

    def describe(self) -> str:
        p = ", ".join(f"{k}={v}" for k, v in self.params().items())
        return f"{self.name}({p})" if p else self.name


SOLVERS: Registry[type[Solver]] = Registry("solver")


def parse_value(text: str):
    """'3' -> 3, '0.5' -> 0.5, 'true' -> True, anything else stays a string."""
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_solver_spec(spec: str) -> tuple[str, dict]:
    """'dpm-solver++:order=3:multistep=false' -> ('dpm-solver++', {'order': 3, 'multistep': False})."""
    name, *parts = spec.split(":")
    params = {}
    for part in parts:
        key, eq, value = part.partition("=")
        if not eq or not key:
            raise ValueError(f"bad solver spec {spec!r}: write NAME:KEY=VALUE:KEY=VALUE, e.g. 'unipc:order=3'")
        params[key.strip().replace("-", "_")] = parse_value(value.strip())
    return name.strip(), params


def solver_from_spec(spec: str, **overrides) -> Solver:
    name, params = parse_solver_spec(spec)
    return make_solver(name, **{**params, **overrides})


def make_solver(name: str, **params) -> Solver:
    """Build a registered solver by name (configuration / CLI boundary)."""
    cls = SOLVERS.get(name)
    try:
        return cls(**params)
    except TypeError as err:
        valid = list(getattr(cls, "__dataclass_fields__", {}))
        raise ValueError(f"bad parameters {params} for solver {name!r}; valid parameters: {valid}") from err
