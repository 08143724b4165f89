"""Noise processes: the pair s(t), sigma(t) with x_t = s(t) * (x_0 + sigma(t) * z).

This is the parameterisation of Karras et al. 2022 ("Elucidating the Design
Space of Diffusion-Based Generative Models", eq. 4 and Table 1). Every process
here is the linear SDE

    dx = f(t) x dt + g(t) dw,         s(t) = exp(int_0^t f),
    sigma(t)^2 = int_0^t g(u)^2 / s(u)^2 du,

so f = s'/s and g^2 = 2 s^2 sigma sigma'. Each class writes f and g in the
form its paper gives them (not derived from s and sigma), which is what the
tests check against: the closed-form marginal variance s^2 sigma^2 must solve
dVar/dt = 2 f Var + g^2.

The scaled variable x_hat = x / s(t) = x_0 + sigma z is what a denoiser
D(x_hat, sigma) sees; solvers convert with ``scale(sigma) = s(t(sigma))``.

Time t runs from ``t_min`` (the smallest time sampled, "t_eps") to ``t_max``
(T). ``sigma_min`` / ``sigma_max`` are sigma at those times.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor

from .registry import Registry

__all__ = [
    "Process",
    "EDM",
    "VE",
    "VPLinear",
    "VPCosine",
    "SubVP",
    "OUVE",
    "RectifiedFlow",
    "PROCESSES",
    "make_process",
]


def _t(t) -> Tensor:
    return t if isinstance(t, Tensor) else torch.as_tensor(t, dtype=torch.float64)


class Process(ABC):
    """A forward noising process in the s(t), sigma(t) form (Karras et al. 2022, eq. 4)."""

    name: str = ""
    t_min: float
    t_max: float

    # pairs of fields that must be ordered (low <= high); t_min < t_max always
    ORDERED: tuple = (("sigma_lo", "sigma_hi"), ("beta_min", "beta_max"))
    POSITIVE: tuple = ()  # fields that must be > 0, not only >= 0

    def check_parameters(self) -> None:
        """Every numeric parameter a finite number >= 0, t_min < t_max and the ranges ordered; the error
        names the process, the parameter and the value. ``make_process`` calls it."""
        for key, value in vars(self).items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"process {self.name}: {key} must be a finite number >= 0, got {value!r}")
        if not self.t_min < self.t_max:
            raise ValueError(f"process {self.name}: need t_min < t_max, got t_min={self.t_min}, t_max={self.t_max}")
        for lo, hi in self.ORDERED:
            if hasattr(self, lo) and hasattr(self, hi) and not getattr(self, lo) <= getattr(self, hi):
                raise ValueError(
                    f"process {self.name}: need {lo} <= {hi}, got {getattr(self, lo)}, {getattr(self, hi)}"
                )
        for key in self.POSITIVE:
            if not getattr(self, key) > 0:
                raise ValueError(f"process {self.name}: {key} must be > 0, got {getattr(self, key)!r}")

    @abstractmethod
    def s(self, t) -> Tensor: ...

    @abstractmethod
    def sigma(self, t) -> Tensor: ...

    @abstractmethod
    def ds_dt(self, t) -> Tensor: ...

    @abstractmethod
    def dsigma_dt(self, t) -> Tensor: ...

    @abstractmethod
    def t_of_sigma(self, sigma) -> Tensor:
        """Inverse of sigma(t)."""

    @abstractmethod
    def drift(self, t) -> Tensor:
        """f(t) of the forward SDE dx = f(t) x dt + g(t) dw."""

    @abstractmethod
    def diffusion(self, t) -> Tensor:
        """g(t) of the forward SDE."""

    # -- derived quantities -------------------------------------------------
    @property
    def sigma_min(self) -> float:
        return float(self.sigma(self.t_min))

    @property
    def sigma_max(self) -> float:
        return float(self.sigma(self.t_max))

    @property
    def sigma_floor(self) -> float:
        """Smallest sigma the process reaches (sigma(t) for the smallest admissible t)."""
        return 0.0

    def scale(self, sigma) -> Tensor:
        """s(t(sigma)): converts x_hat = x / s to the process's x."""
        return self.s(self.t_of_sigma(sigma))

    def marginal_std(self, t) -> Tensor:
        """Std of x_t given x_0: s(t) sigma(t)."""
        return self.s(t) * self.sigma(t)

    def prior_std(self) -> float:
        """Std of the prior x_T ~ N(0, s(T)^2 sigma(T)^2 I) (Karras et al. 2022, Alg. 1 line 1)."""
        return float(self.marginal_std(self.t_max))

    def check_sigma_reachable(self, sigma: float) -> None:
        if sigma < self.sigma_floor * (1 - 1e-9):
            raise ValueError(
                f"{self.name} process: sigma={sigma:g} is below the smallest level it reaches "
                f"({self.sigma_floor:g}); end the grid at sigma_min={self.sigma_floor:g} instead of 0"
            )

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


PROCESSES: Registry[type[Process]] = Registry("process")


@PROCESSES.register("edm")
@dataclass(repr=False)
class EDM(Process):
    """sigma(t) = t, s(t) = 1 (Karras et al. 2022, Sec. 3 and Table 1).

    Forward SDE: dx = sqrt(2 t) dw, so f = 0 and g = sqrt(2 sigma sigma') = sqrt(2 t).
    """

    t_min: float = 0.002
    t_max: float = 80.0
    name = "edm"

    def s(self, t):
        return torch.ones_like(_t(t))

    def sigma(self, t):
        return _t(t).clone()

    def ds_dt(self, t):
        return torch.zeros_like(_t(t))

    def dsigma_dt(self, t):
        return torch.ones_like(_t(t))

    def t_of_sigma(self, sigma):
        return _t(sigma).clone()

    def drift(self, t):
        return torch.zeros_like(_t(t))

    def diffusion(self, t):
        return torch.sqrt(2 * _t(t))


@PROCESSES.register("ve")
@dataclass(repr=False)
class VE(Process):
    """Variance exploding (SMLD) process, geometric sigma (Song et al. 2021, eq. 30-31).

    sigma(t) = sigma_min (sigma_max / sigma_min)^t for t in [0, 1]; s = 1;
    g(t) = sigma(t) sqrt(2 log(sigma_max / sigma_min)).  sigma never reaches 0:
    grids for VE end at sigma_min (optionally followed by a final denoising step).
    """

    sigma_lo: float = 0.01
    sigma_hi: float = 50.0
    t_min: float = 0.0
    t_max: float = 1.0
    name = "ve"

    @property
    def _log_r(self) -> float:
        return math.log(self.sigma_hi / self.sigma_lo)

    @property
    def sigma_floor(self) -> float:
        return self.sigma_lo

    def s(self, t):
        return torch.ones_like(_t(t))

    def sigma(self, t):
        return self.sigma_lo * torch.exp(self._log_r * _t(t))

    def ds_dt(self, t):
        return torch.zeros_like(_t(t))

    def dsigma_dt(self, t):
        return self.sigma(t) * self._log_r

    def t_of_sigma(self, sigma):
        return torch.log(_t(sigma) / self.sigma_lo) / self._log_r

    def drift(self, t):
        return torch.zeros_like(_t(t))

    def diffusion(self, t):
        return self.sigma(t) * math.sqrt(2 * self._log_r)


@PROCESSES.register("vp")
@dataclass(repr=False)
class VPLinear(Process):
    """Variance preserving process with linear beta (Ho et al. 2020; Song et al. 2021, eq. 32-33).

    beta(t) = beta_min + t (beta_max - beta_min), B(t) = int_0^t beta;
    f = -beta/2, g = sqrt(beta); s = exp(-B/2), sigma = sqrt(exp(B) - 1)
    (Karras et al. 2022, Table 1, "VP").
    """

    beta_min: float = 0.1
    beta_max: float = 20.0
    t_min: float = 1e-3
    t_max: float = 1.0
    name = "vp"

    def _beta(self, t):
        return self.beta_min + _t(t) * (self.beta_max - self.beta_min)

    def _B(self, t):
        t = _t(t)
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2

    def _t_of_B(self, B):
        bd = self.beta_max - self.beta_min
        # root of 0.5 bd t^2 + beta_min t - B = 0, written without cancellation
        return 2 * B / (self.beta_min + torch.sqrt(self.beta_min**2 + 2 * bd * B))

    def s(self, t):
        return torch.exp(-0.5 * self._B(t))

    def sigma(self, t):
        return torch.sqrt(torch.expm1(self._B(t)))

    def ds_dt(self, t):
        return -0.5 * self._beta(t) * self.s(t)

    def dsigma_dt(self, t):
        return 0.5 * self._beta(t) * torch.exp(self._B(t)) / self.sigma(t)

    def t_of_sigma(self, sigma):
        return self._t_of_B(torch.log1p(_t(sigma) ** 2))

    def drift(self, t):
        return -0.5 * self._beta(t)

    def diffusion(self, t):
        return torch.sqrt(self._beta(t))


@PROCESSES.register("vp-cosine")
@dataclass(repr=False)
class VPCosine(Process):
    """VP process with the cosine schedule (Nichol & Dhariwal 2021, eq. 17).

    alpha_bar(t) = cos^2(u(t)) / cos^2(u(0)), u(t) = (t + offset) / (1 + offset) * pi / 2;
    s = sqrt(alpha_bar), sigma = sqrt(1 / alpha_bar - 1);
    beta(t) = -d log alpha_bar / dt = pi / (1 + offset) * tan(u); f = -beta / 2, g = sqrt(beta).
    alpha_bar(1) = 0, so T defaults to 0.9946 where sigma(T) is about 119.
    """

    offset: float = 0.008
    t_min: float = 1e-3
    t_max: float = 0.9946
    name = "vp-cosine"

    @property
    def _du(self) -> float:
        return math.pi / (2 * (1 + self.offset))

    def _u(self, t):
        return (_t(t) + self.offset) * self._du

    @property
    def _cos_u0(self) -> float:
        return math.cos(self.offset * self._du)

    def s(self, t):
        return torch.cos(self._u(t)) / self._cos_u0

    def sigma(self, t):
        c = torch.cos(self._u(t))
        return torch.sqrt(torch.clamp((self._cos_u0 / c) ** 2 - 1, min=0.0))

    def ds_dt(self, t):
        return -torch.sin(self._u(t)) * self._du / self._cos_u0

    def dsigma_dt(self, t):
        u = self._u(t)
        d_inv_abar = self._cos_u0**2 * 2 * torch.sin(u) * self._du / torch.cos(u) ** 3
        return d_inv_abar / (2 * self.sigma(t))

    def t_of_sigma(self, sigma):
        u = torch.arccos(self._cos_u0 / torch.sqrt(1 + _t(sigma) ** 2))
        return u / self._du - self.offset

    def drift(self, t):
        return -0.5 * self._beta(t)

    def diffusion(self, t):
        return torch.sqrt(self._beta(t))

    def _beta(self, t):
        return 2 * self._du * torch.tan(self._u(t))


@PROCESSES.register("subvp")
@dataclass(repr=False)
class SubVP(VPLinear):
    """Sub-VP process (Song et al. 2021, eq. 34): dx = -beta/2 x dt + sqrt(beta (1 - e^{-2B})) dw.

    Mean e^{-B/2} x_0, std 1 - e^{-B}; hence s = e^{-B/2}, sigma = 2 sinh(B/2).
    """

    name = "subvp"

    def sigma(self, t):
        return 2 * torch.sinh(0.5 * self._B(t))

    def dsigma_dt(self, t):
        return torch.cosh(0.5 * self._B(t)) * self._beta(t)

    def t_of_sigma(self, sigma):
        return self._t_of_B(2 * torch.asinh(0.5 * _t(sigma)))

    def diffusion(self, t):
        return torch.sqrt(self._beta(t) * -torch.expm1(-2 * self._B(t)))


@PROCESSES.register("ouve")
@dataclass(repr=False)
class OUVE(Process):
    """Ornstein-Uhlenbeck variance-exploding process of SGMSE+ (Richter et al. 2023, eq. 6-8).

    dx = theta (y - x) dt + sigma_lo r^t sqrt(2 log r) dw,  r = sigma_hi / sigma_lo.
    Mean e^{-theta t} x_0 + (1 - e^{-theta t}) y and variance
    Var(t) = sigma_lo^2 (r^{2t} - e^{-2 theta t}) log r / (theta + log r).
    samplerlab works on the residual u = x - y, whose mean decays as e^{-theta t}:
    s = e^{-theta t}, sigma^2 = Var / s^2 = c (e^{k t} - 1) with
    c = sigma_lo^2 log r / (theta + log r) and k = 2 (theta + log r). Add y back at the end.
    The prior is y + sqrt(Var(T)) z, i.e. u_T ~ N(0, Var(T) I).
    """

    POSITIVE = ("theta",)  # the stiffness of the drift toward y
    theta: float = 1.5
    sigma_lo: float = 0.05
    sigma_hi: float = 0.5
    t_min: float = 0.03
    t_max: float = 1.0
    name = "ouve"

    @property
    def _log_r(self) -> float:
        return math.log(self.sigma_hi / self.sigma_lo)

    @property
    def _c(self) -> float:
        return self.sigma_lo**2 * self._log_r / (self.theta + self._log_r)

    @property
    def _k(self) -> float:
        return 2 * (self.theta + self._log_r)

    def s(self, t):
        return torch.exp(-self.theta * _t(t))

    def sigma(self, t):
        return torch.sqrt(self._c * torch.expm1(self._k * _t(t)))

    def ds_dt(self, t):
        return -self.theta * self.s(t)

    def dsigma_dt(self, t):
        t = _t(t)
        return self._c * self._k * torch.exp(self._k * t) / (2 * self.sigma(t))

    def t_of_sigma(self, sigma):
        return torch.log1p(_t(sigma) ** 2 / self._c) / self._k

    def drift(self, t):
        return torch.full_like(_t(t), -self.theta)

    def diffusion(self, t):
        return self.sigma_lo * torch.exp(self._log_r * _t(t)) * math.sqrt(2 * self._log_r)


@PROCESSES.register("rectified-flow")
@dataclass(repr=False)
class RectifiedFlow(Process):
    """The rectified-flow / flow-matching path x_t = (1 - t) x_0 + t eps, t in [0, 1] (Liu et al. 2022, eq. 1;
    Lipman et al. 2022, eq. 20 with sigma_min = 0; Esser et al. 2024, SD3, Sec. 2 and eq. 3).

    In the (s, sigma) form: s(t) = 1 - t, sigma(t) = t / (1 - t), t(sigma) = sigma / (1 + sigma), so
    s sigma = t and the signal-to-noise ratio is ((1 - t) / t)^2. A flow model's velocity
    v = dx_t/dt = eps - x_0 is ``Prediction.FLOW`` under this process, and the probability-flow ODE
    (Karras et al. 2022, eq. 4) is dx/dt = (x - D(x / s; sigma)) / t, the learned flow itself.
    The SDE with the same marginals: f = s'/s = -1 / (1 - t), g^2 = 2 s^2 sigma sigma' = 2 t / (1 - t)
    (the family of Song et al. 2021, eq. 5, for this s and sigma; both are singular at t = 1).

    t = 1 is pure noise (x = eps) but sigma = inf there, a level no solver step can take, so sampling
    starts at ``t_max`` < 1 (default 1 - 1e-4, sigma_max = 9999) from the prior x = t_max z: that differs
    from the flow started at t = 1 by (1 - t_max) E[x_0] + O((1 - t_max)^2), since near t = 1 the flow
    moves x by (t - 1)(x - E[x_0]). ``t_min`` (default 1e-3, diffusers' 1 / 1000 training steps) is the
    smallest level a built-in grid uses before its final step to 0.
    """

    t_min: float = 1e-3
    t_max: float = 1.0 - 1e-4
    name = "rectified-flow"

    def check_parameters(self) -> None:
        super().check_parameters()
        if not self.t_max < 1:
            raise ValueError(
                f"process {self.name}: t_max must be < 1 (sigma = t / (1 - t) is infinite at t = 1), got {self.t_max!r}"
            )

    def s(self, t):
        return 1 - _t(t)

    def sigma(self, t):
        t = _t(t)
        return t / (1 - t)

    def ds_dt(self, t):
        return torch.full_like(_t(t), -1.0)

    def dsigma_dt(self, t):
        return 1 / (1 - _t(t)) ** 2

    def t_of_sigma(self, sigma):
        sigma = _t(sigma)
        return sigma / (1 + sigma)

    def scale(self, sigma):
        # 1 / (1 + sigma) rather than 1 - t(sigma): no cancellation at large sigma
        return 1 / (1 + _t(sigma))

    def drift(self, t):
        return -1 / (1 - _t(t))

    def diffusion(self, t):
        t = _t(t)
        return torch.sqrt(2 * t / (1 - t))


def make_process(name: str, **params) -> Process:
    """Build a registered process by name (CLI / config boundary)."""
    cls = PROCESSES.get(name)
    try:
        process = cls(**params)
    except TypeError as err:
        fields = [f for f in cls.__dataclass_fields__]
        raise ValueError(f"bad parameters {params} for process {name!r}; valid: {fields}") from err
    process.check_parameters()
    return process
