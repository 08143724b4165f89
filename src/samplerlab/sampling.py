"""The one sampling loop that runs every solver.

    result = sample(denoiser, x_T, grid, solver, process=EDM(), noise=SampleNoise(seeds))

Randomness comes from per-sample streams (``SampleNoise``), so a sample depends
on its seed and not on the batch it ran in. NFE is counted by wrapping the
denoiser, never assumed.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import Tensor

from .denoisers import Denoiser, NFECounter, model_dtype
from .grids import validate_grid
from .noise import SampleNoise
from .processes import EDM, Process
from .solvers.base import Solver, StepContext, make_solver

__all__ = ["StepRecord", "SampleResult", "NonFiniteError", "sample", "prior_sample", "generate"]


@dataclass(frozen=True)
class StepRecord:
    """What a callback receives after each step."""

    step: int  # 0-based index of the step just taken
    num_steps: int
    sigma: float  # level the step started from
    sigma_next: float  # level it reached
    x: Tensor  # state at sigma_next (process coordinates)
    x0_hat: Tensor  # the step's last data estimate
    nfe: int  # model calls so far


@dataclass
class SampleResult:
    x: Tensor
    nfe: int  # counted model calls
    num_steps: int
    wall_seconds: float
    model_seconds: float
    info: dict = field(default_factory=dict)  # solver-specific figures (adaptive step counts, ...)

    @property
    def overhead_share(self) -> float:
        """Share of wall time spent outside the model."""
        return 0.0 if self.wall_seconds <= 0 else max(0.0, 1 - self.model_seconds / self.wall_seconds)


def sample(
    denoiser: Denoiser,
    x: Tensor,
    grid,
    solver: Solver | str,
    *,
    process: Process | None = None,
    noise: SampleNoise | None = None,
    cond: dict | None = None,
    callback: Callable[[StepRecord], None] | None = None,
    progress: bool = False,
    hooks: Sequence = (),
    nonfinite: str = "error",
) -> SampleResult:
    """Integrate from ``x`` at level grid[0] down the grid with ``solver``.

    ``x`` is in the process's coordinates (x = s(t) x_hat); the result is at the
    grid's last level. Stochastic solvers and noise-drawing hooks (e.g. ``Inpaint``) draw from ``noise``.
    ``hooks`` act on the state at every level (``samplerlab.conditioning``). ``solver`` is a solver or a spec
    string as the CLI and TOML files write it (``"dpm-solver++:order=3"``).

    ``nonfinite``: what a NaN or infinity in the state does — "error" (default: a ``NonFiniteError`` naming
    the first step and levels where it appeared), "warn" or "ignore". Each step records a flag on the state's
    device and they are read once at the end, so the check costs no host-device synchronisation per step.
    """
    process = process or EDM()
    sigmas = validate_grid(grid, process)
    if nonfinite not in NONFINITE_POLICIES:
        raise ValueError(f"nonfinite must be one of {', '.join(NONFINITE_POLICIES)}, got {nonfinite!r}")
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise ValueError(f"the starting state must be a floating-point tensor, got {getattr(x, 'dtype', type(x))}")
    if x.ndim < 1 or x.shape[0] == 0:
        raise ValueError(f"the starting state must be a batch (B, ...), got shape {tuple(x.shape)}")
    declared = model_dtype(denoiser)
    if declared is not None and declared.is_floating_point and _precision(declared) > _precision(x.dtype):
        raise ValueError(
            f"the model computes in {declared} but the state is {x.dtype}: its outputs would be rounded to "
            f"{x.dtype}. Sample in {declared} (generate(..., dtype={declared}) or a {declared} start) or "
            f"convert the model to {x.dtype} (model.to({x.dtype}))"
        )
    if isinstance(solver, str):
        solver = make_solver(solver)
    solver.check_parameters()
    if solver.stochastic and noise is None:
        raise ValueError(f"solver {solver.name!r} is stochastic: pass noise=SampleNoise(seeds)")
    if noise is None and any(getattr(h, "needs_noise", False) for h in hooks):
        raise ValueError(
            f"hook {type(next(h for h in hooks if h.needs_noise)).__name__} draws noise: pass noise=SampleNoise(seeds)"
        )
    if noise is not None and len(noise) != x.shape[0]:
        raise ValueError(f"batch of {x.shape[0]} samples but {len(noise)} seeds")
    counter = NFECounter(denoiser)
    ctx = StepContext(counter, process, sigmas, noise, dict(cond or {}), solver.name)
    start = time.perf_counter()  # the wall time includes the solver's set-up (its grid plan, when not cached)
    state = solver.init_state(ctx)
    if hasattr(noise, "plan"):  # about one draw per step, made together (other noise sources may lack it)
        noise.plan(ctx.num_steps)
    steps = range(ctx.num_steps)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc=solver.name, unit="step", leave=False)
    finite: list[Tensor] = []  # one flag per step, on the state's device
    with torch.no_grad():
        if nonfinite != "ignore" and not bool(torch.isfinite(x).all()):
            _nonfinite(nonfinite, "the starting state is not finite")
        for hook in hooks:
            x = hook.at_level(ctx, x, 0)
        for i in steps:
            out = solver.step(ctx, x, i, state)
            x, state = out.x, out.state
            for hook in hooks:
                x = hook.at_level(ctx, x, i + 1)
            if nonfinite != "ignore":
                finite.append(torch.isfinite(x).all())
            if callback is not None:
                callback(StepRecord(i, ctx.num_steps, ctx.sigma(i), ctx.sigma(i + 1), x, out.x0_hat, counter.calls))
    if x.is_cuda:
        torch.cuda.synchronize(x.device)
    wall = time.perf_counter() - start
    if finite:
        ok = torch.stack(finite).cpu()
        if not bool(ok.all()):
            i = int((~ok).nonzero()[0])
            _nonfinite(
                nonfinite,
                f"the state became non-finite at step {i + 1} of {ctx.num_steps} (sigma {ctx.sigma(i):g} -> "
                f"{ctx.sigma(i + 1):g}) with {solver.describe()}: the model returned NaN / inf, or the solver diverged",
            )
    return SampleResult(x, counter.calls, ctx.num_steps, wall, counter.seconds, solver.report(state))


NONFINITE_POLICIES = ("error", "warn", "ignore")


def _precision(dtype: torch.dtype) -> float:
    return 1 / torch.finfo(dtype).eps if dtype.is_floating_point else 0.0


class NonFiniteError(FloatingPointError):
    """A sampler's state became NaN or infinite (``sample(nonfinite="error")``)."""


def _nonfinite(policy: str, message: str) -> None:
    if policy == "error":
        raise NonFiniteError(message)
    warnings.warn(message, RuntimeWarning, stacklevel=3)


def prior_sample(process: Process, sigma_start: float, noise: SampleNoise, shape: Sequence[int]) -> Tensor:
    """x at level sigma_start from the prior N(0, s^2 sigma^2 I) (Karras et al. 2022, Alg. 1 line 1).

    The first draw of each sample's stream, so seed -> starting noise is fixed.
    """
    return noise.randn(*shape) * float(process.scale(sigma_start) * sigma_start)


def generate(
    denoiser: Denoiser,
    shape: Sequence[int],
    grid,
    solver: Solver | str,
    seeds: Sequence[int],
    *,
    process: Process | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
    **kwargs,
) -> SampleResult:
    """Draw the prior from ``seeds`` and sample: the usual entry point for generation. ``dtype`` of the
    sampling: by default the model's own (``denoisers.model_dtype``), float32 for a model that declares none."""
    process = process or EDM()
    dtype = dtype or model_dtype(denoiser) or torch.float32
    sigmas = validate_grid(grid, process)
    noise = SampleNoise(seeds, device=device, dtype=dtype)
    x = prior_sample(process, float(sigmas[0]), noise, shape)
    return sample(denoiser, x, sigmas, solver, process=process, noise=noise, **kwargs)
