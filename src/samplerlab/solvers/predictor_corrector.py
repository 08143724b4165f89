"""Predictor-corrector samplers (Song et al. 2021, Alg. 1-5) and annealed Langevin dynamics
(Song & Ermon 2019, Alg. 1), in the process's own coordinates.

``PredictorCorrector(predictor, corrector)``: the predictor is any ``Solver`` that moves from sigma_i to
sigma_{i+1} (reverse diffusion, Euler-Maruyama, ancestral sampling, or any other registered solver); the
corrector then runs Langevin MCMC at sigma_{i+1} (never at sigma = 0). The score of x_t is
grad log p_t(x) = (s D(x/s; sigma) - x) / (s sigma)^2. Norms in the Langevin step sizes are per sample,
so a sample does not depend on its batch.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch

from ..registry import Registry
from .base import SOLVERS, Solver, StepContext, StepOutput
from .sde import DDIM, EulerMaruyama, ReverseDiffusion

__all__ = [
    "NoPredictor",
    "PREDICTORS",
    "Corrector",
    "Langevin",
    "AnnealedLangevinCorrector",
    "CORRECTORS",
    "PredictorCorrector",
    "AnnealedLangevin",
]


@dataclass
class NoPredictor(Solver):
    """Corrector-only sampling: the state is carried to the next level by the process's scale alone; the
    step to sigma = 0 returns D (a final denoising step). 0 model calls per step but that one."""

    name = "none"
    calls_per_step = 0

    def nfe(self, num_steps: int, final_zero: bool = True) -> int:
        return 1 if final_zero else 0

    def step(self, ctx: StepContext, x, i, state) -> StepOutput:
        sigma, sigma_next = ctx.sigma(i), ctx.sigma(i + 1)
        if sigma_next == 0:
            return ctx.final_step(x, i, state)
        x = x * (ctx.scale(sigma_next) / ctx.scale(sigma))
        return StepOutput(x, x / ctx.scale(sigma_next), state)


# predictor names of Song et al. 2021 -> solvers (the API takes any Solver object)
PREDICTORS: Registry = Registry("predictor")
PREDICTORS.register("reverse-diffusion")(ReverseDiffusion)
PREDICTORS.register("euler-maruyama")(EulerMaruyama)
PREDICTORS.register("ancestral")(lambda: DDIM(eta=1.0))  # the DDPM posterior step (eq. 47 for VE)
PREDICTORS.register("none")(NoPredictor)


class Corrector(ABC):
    """Langevin MCMC at a fixed level: x <- x + eps score + sqrt(2 eps) z with a step size eps of its own."""

    snr: float

    @abstractmethod
    def step_size(self, ctx: StepContext, sigma: float, score, z):
        """eps (a float or one value per sample)."""

    def correct(self, ctx: StepContext, x, sigma: float):
        """One corrector step at level sigma (Song et al. 2021, Alg. 4-5); returns (x, D)."""
        score, x0 = ctx.score(x, sigma)
        z = ctx.randn_like(x)
        eps = self.step_size(ctx, sigma, score, z)
        return x + eps * score + torch.sqrt(2 * torch.as_tensor(eps, dtype=x.dtype, device=x.device)) * z, x0


def _per_sample_norm(v: torch.Tensor) -> torch.Tensor:
    return v.reshape(v.shape[0], -1).norm(dim=1).reshape(-1, *([1] * (v.ndim - 1)))


@dataclass
class Langevin(Corrector):
    """Song et al. 2021, Alg. 4-5: eps = 2 (r ||z|| / ||score||)^2 per sample, r = ``snr``."""

    snr: float = 0.16

    def step_size(self, ctx, sigma, score, z):
        return 2 * (self.snr * _per_sample_norm(z) / _per_sample_norm(score).clamp_min(1e-30)) ** 2


@dataclass
class AnnealedLangevinCorrector(Corrector):
    """The annealed-Langevin corrector of SGMSE+ (Richter et al. 2023): eps = 2 (r s sigma)^2, the marginal
    std of x_t scaled by r = ``snr``."""

    snr: float = 0.16

    def step_size(self, ctx, sigma, score, z):
        return 2 * (self.snr * ctx.scale(sigma) * sigma) ** 2


CORRECTORS: Registry = Registry("corrector")
CORRECTORS.register("langevin")(Langevin)
CORRECTORS.register("annealed-langevin")(AnnealedLangevinCorrector)
CORRECTORS.register("none")(lambda snr: None)


def _resolve(registry: Registry, value, what: str):
    if value not in registry:
        raise ValueError(f"unknown {what} {value!r}; valid: {', '.join(registry.names())}")
    return registry.get(value)


@SOLVERS.register("pc")
@dataclass
class PredictorCorrector(Solver):
    """Predictor-corrector sampling (Song et al. 2021, Alg. 1 and 2).

    ``predictor``: any Solver object (API), or by name reverse-diffusion (eq. 46), euler-maruyama, ancestral
    (the DDPM posterior step; DDIM with eta = 1), none (corrector only: then annealed Langevin dynamics).
    ``corrector``: a Corrector, or langevin (snr r), annealed-langevin, none; ``corrector_steps`` per level.
    The SGMSE+ sampler is reverse-diffusion + annealed-langevin, one step, snr 0.5 (Richter et al. 2023).
    Model calls: the predictor's, plus ``corrector_steps`` at every level but sigma = 0.
    """

    predictor: str = "reverse-diffusion"
    corrector: str = "langevin"
    corrector_steps: int = 1
    PARAM_RANGES: ClassVar[dict[str, tuple]] = {"snr": (0.0, None), "corrector_steps": (0, 100)}
    snr: float = 0.16

    name = "pc"
    order = 1
    stochastic = True

    def __post_init__(self):
        self._predictor = (
            self.predictor
            if isinstance(self.predictor, Solver)
            else _resolve(PREDICTORS, self.predictor, "predictor")()
        )
        self._corrector = (
            self.corrector
            if isinstance(self.corrector, Corrector)
            else _resolve(CORRECTORS, self.corrector, "corrector")(snr=self.snr)
        )
        if self.corrector_steps < 0:
            raise ValueError(f"corrector_steps must be >= 0, got {self.corrector_steps}")
        if self._corrector is None:
            self.corrector_steps = 0

    @property
    def calls_per_step(self) -> int:  # type: ignore[override]
        return self._predictor.calls_per_step + self.corrector_steps

    def nfe(self, num_steps: int, final_zero: bool = True) -> int:
        corrected = num_steps - 1 if final_zero else num_steps  # no corrector at sigma = 0
        return self._predictor.nfe(num_steps, final_zero) + self.corrector_steps * corrected

    def init_state(self, ctx: StepContext):
        return self._predictor.init_state(ctx)

    def step(self, ctx: StepContext, x, i, state) -> StepOutput:
        out = self._predictor.step(ctx, x, i, state)
        x, x0 = out.x, out.x0_hat
        sigma_next = ctx.sigma(i + 1)
        if sigma_next > 0:
            for _ in range(self.corrector_steps):
                x, x0 = self._corrector.correct(ctx, x, sigma_next)
        return StepOutput(x, x0, out.state)

    def report(self, state) -> dict:
        return self._predictor.report(state)


@SOLVERS.register("annealed-langevin")
@dataclass
class AnnealedLangevin(Solver):
    """Annealed Langevin dynamics (Song & Ermon 2019, Alg. 1) on the grid's levels.

    At each level sigma_{i+1} > 0: ``steps_per_level`` updates x <- x + (a/2) score + sqrt(a) z with
    a = step_size * sigma_{i+1}^2 / sigma_L^2, sigma_L the smallest positive level. A step to sigma = 0
    returns D (a final denoising step). Model calls per level: ``steps_per_level``.
    """

    steps_per_level: int = 100
    step_size: float = 2e-5

    name = "annealed-langevin"
    order = 1
    stochastic = True

    def __post_init__(self):
        if self.steps_per_level < 1 or not self.step_size > 0:
            raise ValueError("annealed-langevin needs steps_per_level >= 1 and step_size > 0")

    @property
    def calls_per_step(self) -> int:  # type: ignore[override]
        return self.steps_per_level

    def nfe(self, num_steps: int, final_zero: bool = True) -> int:
        return self.steps_per_level * (num_steps - 1) + 1 if final_zero else self.steps_per_level * num_steps

    def step(self, ctx: StepContext, x, i, state) -> StepOutput:
        sigma, sigma_next = ctx.sigma(i), ctx.sigma(i + 1)
        if sigma_next == 0:
            return ctx.final_step(x, i, state)
        x = x * (ctx.scale(sigma_next) / ctx.scale(sigma))
        positive = ctx.sigmas[ctx.sigmas > 0]
        sigma_last = float(positive[-1])
        a = self.step_size * (sigma_next / sigma_last) ** 2
        x0 = None
        for _ in range(self.steps_per_level):
            score, x0 = ctx.score(x, sigma_next)
            x = x + (a / 2) * score + math.sqrt(a) * ctx.randn_like(x)
        return StepOutput(x, x0, state)
