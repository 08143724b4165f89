"""What a sampler is calibrated against: for given seeds, the prior draws and the end points of the
probability-flow ODE solved tightly from them (the teacher), for any model behind the denoiser contract.

``Target`` says how to draw a batch (prior, conditioning); ``solve_teacher`` runs an adaptive Dormand-Prince
solve (``dopri5`` at a tight tolerance) from sigma_max down to the grid's last positive level, then the final
denoising step, as the built-in grids end.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import Tensor

from ..noise import SampleNoise
from ..processes import Process
from ..sampling import prior_sample, sample
from ..solvers import make_solver

__all__ = ["Target", "TeacherSet", "solve_teacher", "fingerprint"]


@dataclass
class Target:
    """A model to calibrate a sampler for: the denoiser, its process, one sample's shape, the dtype to sample in
    and, for conditional models, ``cond(seeds) -> dict`` giving each seed's conditioning (e.g. the noisy
    recording y of the OUVE speech models)."""

    denoiser: Callable
    process: Process
    shape: tuple[int, ...]
    dtype: torch.dtype = torch.float64
    cond: Callable[[Sequence[int]], dict] | None = None
    sigma_max: float | None = None
    sigma_min: float | None = None

    def __post_init__(self):
        self.sigma_max = float(self.process.sigma_max if self.sigma_max is None else self.sigma_max)
        self.sigma_min = float(self.process.sigma_min if self.sigma_min is None else self.sigma_min)
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}")

    def draw(self, seeds: Sequence[int]) -> tuple[Tensor, dict, SampleNoise]:
        noise = SampleNoise(list(seeds), dtype=self.dtype)
        x_T = prior_sample(self.process, self.sigma_max, noise, self.shape)
        return x_T, (self.cond(seeds) if self.cond is not None else {}), noise


@dataclass
class TeacherSet:
    """Prior draws ``x_T`` of ``seeds``, their conditioning and the teacher's end points ``x_0``."""

    seeds: list[int]
    x_T: Tensor
    x_0: Tensor
    cond: dict = field(default_factory=dict)
    nfe: int = 0


def solve_teacher(target: Target, seeds: Sequence[int], rtol: float | None = None) -> TeacherSet:
    """The tight adaptive solve from each seed's prior draw (``rtol`` default: 1e-6 in float64, 1e-5 else)."""
    rtol = rtol if rtol is not None else (1e-6 if target.dtype == torch.float64 else 1e-5)
    x_T, cond, _ = target.draw(seeds)
    grid = torch.tensor([target.sigma_max, target.sigma_min, 0.0], dtype=torch.float64)
    solver = make_solver("dopri5", rtol=rtol, atol=rtol / 10)
    result = sample(target.denoiser, x_T, grid, solver, process=target.process, cond=cond)
    return TeacherSet(list(seeds), x_T, result.x, cond, result.nfe)


def fingerprint(denoiser) -> str:
    """A short hash of a model's numbers (a module's state dict, an analytic model's tensors), written into a
    calibrated grid's provenance so a grid is not silently used with another model."""
    h = hashlib.sha256(type(denoiser).__name__.encode())
    target = getattr(denoiser, "net", denoiser)
    if isinstance(target, torch.nn.Module):
        items = sorted(target.state_dict().items())
    else:
        items = sorted((k, v) for k, v in vars(denoiser).items() if isinstance(v, Tensor))
    for name, tensor in items:
        h.update(name.encode())
        h.update(tensor.detach().to("cpu", torch.float64).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
