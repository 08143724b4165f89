"""Predictor-corrector samplers (Song et al. 2021, Alg. 1-5) and annealed Langevin dynamics
(Song & Ermon 2019, Alg. 1), in the process's own coordinates.

The score of x_t is grad log p_t(x) = (s D(x/s; sigma) - x) / (s sigma)^2. Predictors move from
sigma_i to sigma_{i+1}; correctors then run Langevin MCMC at sigma_{i+1} (never at sigma = 0).
Norms in the Langevin step sizes are per sample, so a sample does not depend on its batch.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import torch

from .base import SOLVERS, Solver, StepContext, StepOutput
from .sde import ancestral_split

__all__ = ["Predictor", "Corrector", "PredictorCorrector", "AnnealedLangevin", "langevin_step"]


class Predictor(enum.Enum):
    REVERSE_DIFFUSION = "reverse-diffusion"
    EULER_MARUYAMA = "euler-maruyama"
    ANCESTRAL = "ancestral"
    NONE = "none"


class Corrector(enum.Enum):
    LANGEVIN = "langevin"
    ANNEALED_LANGEVIN = "annealed-langevin"
    NONE = "none"


def _enum(kind, value, what: str):
    try:
        return kind(value) if not isinstance(value, kind) else value
    except ValueError:
        raise ValueError(f"unknown {what} {value!r}; valid: {', '.join(m.value for m in kind)}") from None


def _score(ctx: StepContext, x, sigma: float):
    s = ctx.scale(sigma)
    x0 = ctx.denoise(x / s, sigma)
    return (s * x0 - x) / (s * sigma) ** 2, x0


def _per_sample_norm(v: torch.Tensor) -> torch.Tensor:
    return v.reshape(v.shape[0], -1).norm(dim=1).reshape(-1, *([1] * (v.ndim - 1)))


def langevin_step(ctx: StepContext, x, sigma: float, corrector: Corrector, snr: float):
    """One corrector step at level sigma (Song et al. 2021, Alg. 4-5; "annealed": their ALD corrector).

    langevin:           eps = 2 (r ||z|| / ||score||)^2
    annealed-langevin:  eps = 2 (r s sigma)^2, the marginal std of x_t scaled by r
    then x <- x + eps score + sqrt(2 eps) z.
    """
    score, x0 = _score(ctx, x, sigma)
    z = ctx.randn_like(x)
    if corrector is Corrector.LANGEVIN:
        eps = 2 * (snr * _per_sample_norm(z) / _per_sample_norm(score).clamp_min(1e-30)) ** 2
    else:
        eps = 2 * (snr * ctx.scale(sigma) * sigma) ** 2
    return x + eps * score + torch.sqrt(2 * torch.as_tensor(eps, dtype=x.dtype, device=x.device)) * z, x0


@SOLVERS.register("pc")
@dataclass
class PredictorCorrector(Solver):
    """Predictor-corrector sampling (Song et al. 2021, Alg. 1 and 2).

    Predictors:
      reverse-diffusion  x' = x - f_i(x) + G_i^2 score + G_i z with the forward transition between the two
                         levels, f_i(x) = (s_i / s_{i+1} - 1) x, G_i = s_i sqrt(sigma_i^2 - sigma_{i+1}^2)
                         (eq. 46; for VP it is exactly their DDPM discretisation);
      euler-maruyama     Euler-Maruyama on the reverse SDE in t;
      ancestral          the DDPM posterior step (eq. 47 for VE; DDIM with eta = 1 in general);
      none               corrector only (then equivalent to annealed Langevin dynamics).
    Correctors: langevin (snr r), annealed-langevin, none; ``corrector_steps`` per level.
    The SGMSE+ sampler is reverse-diffusion + annealed-langevin, one step, snr 0.5 (Richter et al. 2023).
    Model calls per step: 1 + corrector_steps (the step to sigma = 0 adds no noise and no corrector).
    """

    predictor: str = "reverse-diffusion"
    corrector: str = "langevin"
    corrector_steps: int = 1
    snr: float = 0.16

    name = "pc"
    order = 1
    stochastic = True

    def __post_init__(self):
        self._predictor = _enum(Predictor, self.predictor, "predictor")
        self._corrector = _enum(Corrector, self.corrector, "corrector")
        if self.corrector_steps < 0:
            raise ValueError(f"corrector_steps must be >= 0, got {self.corrector_steps}")
        if self._corrector is Corrector.NONE:
            self.corrector_steps = 0

    @property
    def calls_per_step(self) -> int:  # type: ignore[override]
        return (0 if self._predictor is Predictor.NONE else 1) + self.corrector_steps

    def nfe(self, num_steps: int, final_zero: bool = True) -> int:
        if final_zero:  # the last step: predictor only (or a denoising call when there is no predictor)
            return self.calls_per_step * (num_steps - 1) + 1
        return self.calls_per_step * num_steps

    def _predict(self, ctx: StepContext, x, sigma: float, sigma_next: float):
        p = self._predictor
        if p is Predictor.NONE:
            if sigma_next == 0:
                x0 = ctx.denoise(x / ctx.scale(sigma), sigma)
                return x0 * ctx.scale(0.0), x0
            return x * (ctx.scale(sigma_next) / ctx.scale(sigma)), None
        if p is Predictor.EULER_MARUYAMA:
            t, t_next = ctx.t(sigma), ctx.t(sigma_next)
            f, g = float(ctx.process.drift(t)), float(ctx.process.diffusion(t))
            score, x0 = _score(ctx, x, sigma)
            h = t_next - t
            x_next = x + h * (f * x - g**2 * score)
            if sigma_next > 0:
                x_next = x_next + g * math.sqrt(-h) * ctx.randn_like(x)
            return x_next, x0
        if p is Predictor.ANCESTRAL:
            s = ctx.scale(sigma)
            x0 = ctx.denoise(x / s, sigma)
            eps = (x / s - x0) / sigma
            sigma_down, sigma_up = ancestral_split(sigma, sigma_next, 1.0)
            x_hat = x0 + sigma_down * eps
            if sigma_up > 0:
                x_hat = x_hat + sigma_up * ctx.randn_like(x)
            return x_hat * ctx.scale(sigma_next), x0
        # reverse diffusion
        s_i, s_next = ctx.scale(sigma), ctx.scale(sigma_next)
        G2 = s_i**2 * (sigma**2 - sigma_next**2)
        score, x0 = _score(ctx, x, sigma)
        x_next = (2 - s_i / s_next) * x + G2 * score
        if sigma_next > 0:
            x_next = x_next + math.sqrt(G2) * ctx.randn_like(x)
        return x_next, x0

    def step(self, ctx: StepContext, x, i, state) -> StepOutput:
        sigma, sigma_next = ctx.sigma(i), ctx.sigma(i + 1)
        x, x0 = self._predict(ctx, x, sigma, sigma_next)
        if sigma_next > 0:
            for _ in range(self.corrector_steps):
                x, x0 = langevin_step(ctx, x, sigma_next, self._corrector, self.snr)
        if x0 is None:
            x0 = x / ctx.scale(sigma_next)
        return StepOutput(x, x0, state)


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
            x0 = ctx.denoise(x / ctx.scale(sigma), sigma)
            return ctx.finish(x0, state)
        x = x * (ctx.scale(sigma_next) / ctx.scale(sigma))
        positive = ctx.sigmas[ctx.sigmas > 0]
        sigma_last = float(positive[-1])
        a = self.step_size * (sigma_next / sigma_last) ** 2
        x0 = None
        for _ in range(self.steps_per_level):
            score, x0 = _score(ctx, x, sigma_next)
            x = x + (a / 2) * score + math.sqrt(a) * ctx.randn_like(x)
        return StepOutput(x, x0, state)
