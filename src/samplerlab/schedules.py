"""Interchangeable noise-schedule shapes sigma(t) for a sampler, and their modifications.

Sampling need not follow training (Karras et al. 2022, Sec. 3; Chen 2023): with the model contract
D(x_hat, sigma), a sampler may use any increasing sigma(t). A ``Schedule`` is a shape f on the
progress variable tau = t / T in [0, 1] (tau = 1 is the start of sampling, the most noise), modified
by a steepness exponent and normalised by linear rescaling onto a range:

    sigma(tau) = sigma_min + (sigma_max - sigma_min) * (f(tau^alpha) - f(tau_min^alpha)) / (f(1) - f(tau_min^alpha))

so sigma(tau_min) = sigma_min and sigma(1) = sigma_max for every shape and every alpha > 0
(tau_min = t_min / T, the smallest time sampled).

Shapes (``SHAPES``): linear; ve (geometric, Song et al. 2021); vp and subvp (their sigma(t), Song et al.
2021); edm (Karras et al. 2022 eq. 5 with rho = 7, the "NVIDIA" schedule); ouve (the SGMSE+
process's own sigma(t), Richter et al. 2023: the baseline).

``ScheduledProcess`` keeps a base process's time range and scaling s(t) (for OUVE: the mean
reversion e^{-theta t}) and replaces sigma(t): the sampler's SDE / ODE then follow the new schedule
while the model is queried at the noise level it was trained for.

Which sigma is rescaled (``Normalisation``): samplerlab's reading (``marginal``, the default) rescales
the shape onto the base's own marginal range in the (s, sigma) form (OUVE: sigma(t_eps)..sigma(1), about
0.02..1.74). The seed-000 study rescaled each function onto SGMSE+'s sigma_min..sigma_max = 0.05..0.5
("Backup 1"), the range of SGMSE+'s own sigma(t) = sigma_min (sigma_max / sigma_min)^t, which is the
scale of the *diffusion* coefficient g(t) = sigma(t) sqrt(2 log(sigma_max / sigma_min)), not the
marginal std; ``diffusion`` reads it so (``OUVEDiffusionSchedule``: the shape, rescaled onto 0.05..0.5
on t in [0, 1], replaces that sigma(t), and the marginal follows from the OUVE SDE).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from .processes import OUVE, Process, SubVP, VPLinear
from .registry import Registry

__all__ = [
    "Shape",
    "SHAPES",
    "Schedule",
    "ScheduledProcess",
    "OUVEDiffusionSchedule",
    "Normalisation",
    "make_shape",
]


@dataclass(frozen=True)
class Shape:
    """An increasing curve f(tau) on [0, 1] with its derivative (any scale: it is normalised)."""

    name: str
    f: Callable[[Tensor], Tensor]
    df: Callable[[Tensor], Tensor]


SHAPES: Registry[Callable[[], Shape]] = Registry("schedule shape")


def _process_shape(name: str, process: Process) -> Shape:
    T = process.t_max
    return Shape(name, lambda tau: process.sigma(tau * T), lambda tau: process.dsigma_dt(tau * T) * T)


@SHAPES.register("linear")
def linear() -> Shape:
    return Shape("linear", lambda tau: tau.clone(), lambda tau: torch.ones_like(tau))


@SHAPES.register("ve")
def ve(ratio: float = 5000.0) -> Shape:
    """Geometric: f = ratio^tau, ratio = VE's sigma_max / sigma_min (Song et al. 2021, CIFAR-10: 50 / 0.01)."""
    lr = math.log(ratio)
    return Shape("ve", lambda tau: torch.exp(lr * tau), lambda tau: lr * torch.exp(lr * tau))


@SHAPES.register("vp")
def vp() -> Shape:
    return _process_shape("vp", VPLinear())


@SHAPES.register("subvp")
def subvp() -> Shape:
    return _process_shape("subvp", SubVP())


@SHAPES.register("edm")
def edm(rho: float = 7.0, sigma_min: float = 0.002, sigma_max: float = 80.0) -> Shape:
    """Karras et al. 2022, eq. 5 as a function of tau: (a + tau (b - a))^rho, a = sigma_min^(1/rho), b = sigma_max^(1/rho)."""
    a, b = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return Shape(
        "edm", lambda tau: (a + tau * (b - a)) ** rho, lambda tau: rho * (b - a) * (a + tau * (b - a)) ** (rho - 1)
    )


@SHAPES.register("ouve")
def ouve() -> Shape:
    return _process_shape("ouve", OUVE())


def make_shape(name: str) -> Shape:
    return SHAPES.get(name)()


def _t(x) -> Tensor:
    return x if isinstance(x, Tensor) else torch.as_tensor(x, dtype=torch.float64)


@dataclass
class Schedule:
    """sigma(tau) = normalised f(tau^alpha) on [tau_min, 1] -> [sigma_min, sigma_max] (module docstring)."""

    shape: Shape
    sigma_min: float
    sigma_max: float
    tau_min: float = 0.0
    steepness: float = 1.0

    def __post_init__(self):
        if not self.steepness > 0:
            raise ValueError(f"steepness alpha must be positive, got {self.steepness}")
        if not 0 <= self.sigma_min < self.sigma_max:
            raise ValueError(f"need 0 <= sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}")
        if not 0 <= self.tau_min < 1:
            raise ValueError(f"tau_min must be in [0, 1), got {self.tau_min}")
        lo = self.shape.f(torch.tensor(self.tau_min**self.steepness, dtype=torch.float64))
        hi = self.shape.f(torch.tensor(1.0, dtype=torch.float64))
        if not float(hi) > float(lo):
            raise ValueError(f"schedule shape {self.shape.name!r} is not increasing on [tau_min, 1]")
        self._lo, self._span = float(lo), float(hi - lo)

    def _warp(self, tau):
        return _t(tau).clamp_min(0.0) ** self.steepness

    def sigma(self, tau) -> Tensor:
        return (
            self.sigma_min + (self.sigma_max - self.sigma_min) * (self.shape.f(self._warp(tau)) - self._lo) / self._span
        )

    def dsigma_dtau(self, tau) -> Tensor:
        tau = _t(tau).clamp_min(1e-300)
        dwarp = self.steepness * tau ** (self.steepness - 1)
        return (self.sigma_max - self.sigma_min) * self.shape.df(self._warp(tau)) * dwarp / self._span

    def tau_of_sigma(self, sigma, iterations: int = 80) -> Tensor:
        """Inverse by bisection on [0, 1] (every shape is increasing); below sigma(0) returns 0."""
        sigma = _t(sigma).to(torch.float64)
        lo = torch.zeros_like(sigma)
        hi = torch.ones_like(sigma)
        for _ in range(iterations):
            mid = 0.5 * (lo + hi)
            below = self.sigma(mid) < sigma
            lo = torch.where(below, mid, lo)
            hi = torch.where(below, hi, mid)
        return 0.5 * (lo + hi)


class ScheduledProcess(Process):
    """A base process's time range and s(t) with the sigma(t) of a ``Schedule`` (tau = t / T).

    f = s'/s and g^2 = 2 s^2 sigma sigma' follow from the pair, so SDE solvers, ODE solvers and grids
    uniform in time all use the new schedule. A grid may end at sigma = 0 (the final denoising step).
    """

    def __init__(self, base: Process, schedule: Schedule, label: str = ""):
        self.base = base
        self.schedule = schedule
        self.t_min, self.t_max = base.t_min, base.t_max
        self.name = label or f"{base.name}+{schedule.shape.name}"

    def _tau(self, t):
        return _t(t) / self.t_max

    def s(self, t):
        return self.base.s(t)

    def ds_dt(self, t):
        return self.base.ds_dt(t)

    def sigma(self, t):
        return self.schedule.sigma(self._tau(t))

    def dsigma_dt(self, t):
        return self.schedule.dsigma_dtau(self._tau(t)) / self.t_max

    def t_of_sigma(self, sigma):
        return self.schedule.tau_of_sigma(sigma) * self.t_max

    @property
    def sigma_floor(self) -> float:
        # a step to sigma = 0 is the final denoising step, taken at t = 0 whatever sigma(0) is
        return 0.0

    def drift(self, t):
        return self.ds_dt(t) / self.s(t)

    def diffusion(self, t):
        s, sig = self.s(t), self.sigma(t)
        return torch.sqrt((2 * s**2 * sig * self.dsigma_dt(t)).clamp_min(0.0))

    def __repr__(self) -> str:
        return (
            f"ScheduledProcess(base={self.base!r}, shape={self.schedule.shape.name!r}, "
            f"steepness={self.schedule.steepness}, range=[{self.schedule.sigma_min:g}, {self.schedule.sigma_max:g}])"
        )

    @classmethod
    def swap(
        cls,
        base: Process,
        shape: str | Shape,
        steepness: float = 1.0,
        normalisation: "Normalisation | str" = "marginal",
    ) -> Process:
        """Replace ``base``'s sigma(t) by ``shape``, normalised onto base's [sigma(t_min), sigma(t_max)]
        (``marginal``) or, for OUVE, as SGMSE+'s diffusion sigma(t) onto [sigma_lo, sigma_hi]
        (``diffusion``: ``OUVEDiffusionSchedule``)."""
        if Normalisation.parse(normalisation) is Normalisation.DIFFUSION:
            return OUVEDiffusionSchedule.swap(base, shape, steepness)
        shape = make_shape(shape) if isinstance(shape, str) else shape
        sched = Schedule(shape, base.sigma_min, base.sigma_max, base.t_min / base.t_max, steepness)
        suffix = "" if steepness == 1.0 else f"^{steepness:g}"
        return cls(base, sched, f"{base.name}+{shape.name}{suffix}")


class Normalisation(enum.Enum):
    """Which sigma a swapped-in schedule shape is rescaled onto (module docstring)."""

    MARGINAL = "marginal"  # samplerlab: the base's marginal sigma range in the (s, sigma) form
    DIFFUSION = "diffusion"  # the seed-000 study: SGMSE+'s diffusion sigma(t) on [sigma_lo, sigma_hi]

    @classmethod
    def parse(cls, value: "Normalisation | str") -> "Normalisation":
        if isinstance(value, cls):
            return value
        try:
            return cls(value)
        except ValueError:
            raise ValueError(
                f"unknown normalisation {value!r}; valid: marginal (samplerlab's (s, sigma) range), "
                "diffusion (SGMSE+'s 0.05..0.5 diffusion sigma, the seed-000 study's reading)"
            ) from None


class OUVEDiffusionSchedule(Process):
    """SGMSE+'s OUVE SDE (Richter et al. 2023, eq. 6) with its diffusion sigma(t) replaced:

        du = -theta u dt + sigma_d(t) sqrt(2 log r) dw,   r = sigma_hi / sigma_lo,

    with sigma_d(t) = ``schedule``.sigma(t / T) (a shape rescaled onto [sigma_lo, sigma_hi]). Then s = e^{-theta t}
    and, from the variance ODE, the (s, sigma) form's sigma(t)^2 = I(t) = int_0^t 2 log r e^{2 theta v}
    sigma_d(v)^2 dv. I is tabulated once (Gauss-Legendre, 5 nodes on each of 4096 intervals) and read by
    cubic Hermite interpolation with its exact derivative, so sigma is C^1 and accurate to ~1e-12; its
    derivative and the SDE's diffusion are exact. With the geometric shape of ratio r it is OUVE itself."""

    POSITIVE = ("theta",)
    _INTERVALS = 4096

    def __init__(self, base: Process, schedule: Schedule, label: str = ""):
        if base.name != "ouve":
            raise ValueError(
                f"normalisation 'diffusion' rescales SGMSE+'s diffusion sigma, which only the OUVE process has "
                f"(base process: {base.name!r}); use normalisation 'marginal'"
            )
        self.base, self.schedule = base, schedule
        self.theta = float(base.theta)
        self.t_min, self.t_max = base.t_min, base.t_max
        self.name = label or f"ouve+{schedule.shape.name}/diffusion"
        self._log_r = math.log(base.sigma_hi / base.sigma_lo)
        self._tabulate()

    def _rate(self, t) -> Tensor:
        """dI/dt = 2 log r e^{2 theta t} sigma_d(t)^2."""
        t = _t(t).to(torch.float64)
        return 2 * self._log_r * torch.exp(2 * self.theta * t) * self.schedule.sigma(t / self.t_max) ** 2

    def _tabulate(self) -> None:
        n = self._INTERVALS
        nodes = torch.linspace(0.0, self.t_max, n + 1, dtype=torch.float64)
        x, w = torch.tensor(_GL5[0], dtype=torch.float64), torch.tensor(_GL5[1], dtype=torch.float64)
        h = self.t_max / n
        mid = nodes[:-1, None] + h * (x[None, :] + 1) / 2
        pieces = (self._rate(mid) * w[None, :]).sum(1) * h / 2
        self._nodes, self._h = nodes, h
        self._I = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(pieces, 0)])
        self._dI = self._rate(nodes)

    def _integral(self, t) -> Tensor:
        t = _t(t).to(torch.float64).clamp(0.0, self.t_max)
        k = torch.clamp((t / self._h).floor().long(), max=self._INTERVALS - 1)
        u = (t - self._nodes[k]) / self._h
        h00, h10 = 2 * u**3 - 3 * u**2 + 1, u**3 - 2 * u**2 + u
        h01, h11 = -2 * u**3 + 3 * u**2, u**3 - u**2
        return h00 * self._I[k] + h10 * self._h * self._dI[k] + h01 * self._I[k + 1] + h11 * self._h * self._dI[k + 1]

    def s(self, t):
        return torch.exp(-self.theta * _t(t))

    def ds_dt(self, t):
        return -self.theta * self.s(t)

    def sigma(self, t):
        return torch.sqrt(self._integral(t).clamp_min(0.0))

    def dsigma_dt(self, t):
        return self._rate(t) / (2 * self.sigma(t).clamp_min(1e-300))

    def t_of_sigma(self, sigma, iterations: int = 64) -> Tensor:
        """Bisection on the monotone I(t) = sigma^2."""
        target = _t(sigma).to(torch.float64) ** 2
        lo, hi = torch.zeros_like(target), torch.full_like(target, self.t_max)
        for _ in range(iterations):
            mid = 0.5 * (lo + hi)
            below = self._integral(mid) < target
            lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
        return 0.5 * (lo + hi)

    @property
    def sigma_floor(self) -> float:
        return 0.0

    def drift(self, t):
        return torch.full_like(_t(t), -self.theta)

    def diffusion(self, t):
        return self.schedule.sigma(_t(t) / self.t_max) * math.sqrt(2 * self._log_r)

    def __repr__(self) -> str:
        return (
            f"OUVEDiffusionSchedule(base={self.base!r}, shape={self.schedule.shape.name!r}, "
            f"steepness={self.schedule.steepness}, diffusion sigma in [{self.schedule.sigma_min:g}, "
            f"{self.schedule.sigma_max:g}])"
        )

    @classmethod
    def swap(cls, base: Process, shape: str | Shape, steepness: float = 1.0) -> "OUVEDiffusionSchedule":
        """``shape`` as SGMSE+'s diffusion sigma(t), rescaled onto [sigma_lo, sigma_hi] over t in [0, T]; the
        base's own shape ("ouve", "base") is its geometric sigma_lo r^t."""
        if base.name != "ouve":
            cls(base, None)  # the error names the base process
        name = shape if isinstance(shape, str) else shape.name
        if name == "ouve":
            shape = Shape("ouve", *_geometric(base.sigma_hi / base.sigma_lo))
        elif isinstance(shape, str):
            shape = make_shape(shape)
        sched = Schedule(shape, base.sigma_lo, base.sigma_hi, 0.0, steepness)
        suffix = "" if steepness == 1.0 else f"^{steepness:g}"
        return cls(base, sched, f"ouve+{shape.name}{suffix}/diffusion")


def _geometric(ratio: float):
    lr = math.log(ratio)
    return (lambda tau: torch.exp(lr * tau), lambda tau: lr * torch.exp(lr * tau))


# Gauss-Legendre, 5 nodes on [-1, 1]
_GL5 = (
    (-0.906179845938664, -0.5384693101056831, 0.0, 0.5384693101056831, 0.906179845938664),
    (0.2369268850561891, 0.4786286704993665, 0.5688888888888889, 0.4786286704993665, 0.2369268850561891),
)
