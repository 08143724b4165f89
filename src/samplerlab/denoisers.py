"""One model contract: D(x_hat, sigma, **cond) -> x0_hat.

``x_hat`` is the scaled variable x / s(t) = x_0 + sigma z (Karras et al. 2022,
eq. 2-3), ``sigma`` a scalar tensor or one value per sample. Adapters turn
networks that predict epsilon, v, the score, x_0 or a flow velocity in a
process's own coordinates into that contract; solvers only ever see D.

Wrappers (classifier-free guidance, the NFE counter) are denoisers around
denoisers, never solver flags.
"""

from __future__ import annotations

import enum
import time
from typing import Callable, Protocol

import torch
from torch import Tensor

from .processes import Process

__all__ = [
    "Denoiser",
    "Prediction",
    "PredictionAdapter",
    "DiscreteDDPMAdapter",
    "EDMPrecond",
    "ClassifierFreeGuidance",
    "LevelShift",
    "NFECounter",
    "as_batch_sigma",
    "edm_noise_input",
    "prediction_from_x0",
    "X0Correction",
    "Clip",
    "DynamicThreshold",
    "CorrectedDenoiser",
]


class Denoiser(Protocol):
    def __call__(self, x: Tensor, sigma: Tensor, **cond) -> Tensor: ...


def as_batch_sigma(sigma, x: Tensor) -> Tensor:
    """sigma as a tensor broadcastable against x: shape (B, 1, ..., 1)."""
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if sigma.ndim == 0:
        sigma = sigma.expand(x.shape[0])
    if sigma.shape != (x.shape[0],):
        raise ValueError(f"sigma must be a scalar or have shape ({x.shape[0]},), got {tuple(sigma.shape)}")
    return sigma.reshape(-1, *([1] * (x.ndim - 1)))


class Prediction(enum.Enum):
    """What a network predicts, in its process's coordinates x_t = alpha x_0 + sigma_t eps.

    alpha = s(t), sigma_t = s(t) sigma(t).
    EPSILON: eps (Ho et al. 2020).  V: v = alpha eps - sigma_t x_0 (Salimans & Ho 2022, Sec. 4).
    SCORE: grad_{x_t} log p_t(x_t) (Song et al. 2021).  X0: x_0.
    FLOW: dx_t/dt = alpha' x_0 + sigma_t' eps (flow matching / rectified flow velocity).
    """

    EPSILON = "epsilon"
    V = "v"
    SCORE = "score"
    X0 = "x0"
    FLOW = "flow"


def _coefficients(process: Process, sigma: Tensor):
    """t, s, s', sigma' at ``sigma``, computed in float64 and returned in sigma's dtype: near a process's
    singular end (rectified flow at t -> 1: s -> 0, sigma' -> inf) the float32 products cancel badly."""
    sig = sigma.to(torch.float64)
    t = process.t_of_sigma(sig)
    return tuple(v.to(sigma.dtype) for v in (t, process.scale(sig), process.ds_dt(t), process.dsigma_dt(t)))


def _x0_from_output(pred: Tensor, x_t: Tensor, alpha, sigma_t, prediction: Prediction) -> Tensor:
    """x_0 from an epsilon / v / score / x0 output, given x_t = alpha x_0 + sigma_t eps."""
    if prediction is Prediction.EPSILON:
        return (x_t - sigma_t * pred) / alpha
    if prediction is Prediction.V:
        # alpha x_t - sigma_t v = (alpha^2 + sigma_t^2) x_0 for any alpha, sigma_t
        return (alpha * x_t - sigma_t * pred) / (alpha**2 + sigma_t**2)
    if prediction is Prediction.SCORE:
        # score = -(x_t - alpha x_0) / sigma_t^2
        return (x_t + sigma_t**2 * pred) / alpha
    if prediction is Prediction.X0:
        return pred
    raise ValueError(f"prediction {prediction.value!r} needs the process's time derivatives")


def _flow_coefficients(process: Process, sigma: Tensor):
    """(a, b, c) with x_0 = (a x_t - b u) / c for a flow output u = alpha' x_0 + sigma_t' eps: eliminating eps,
    sigma_t' x_t - sigma_t u = (sigma_t' alpha - sigma_t alpha') x_0 = s^2 sigma' x_0. In float64 (for rectified
    flow a = c = 1 and b = t, but near t = 1 float32 would compute a from -sigma + s sigma', two numbers of 1e4)."""
    sig = sigma.to(torch.float64)
    t = process.t_of_sigma(sig)
    s, ds, dsig = process.scale(sig), process.ds_dt(t), process.dsigma_dt(t)
    return tuple(v.to(sigma.dtype) for v in (ds * sig + s * dsig, s * sig, s**2 * dsig))


def x0_from_prediction(pred: Tensor, x_t: Tensor, sigma: Tensor, process: Process, prediction: Prediction) -> Tensor:
    """Invert a network output to x_0 (sigma already shaped like x)."""
    if prediction in (Prediction.EPSILON, Prediction.V, Prediction.SCORE, Prediction.X0):
        _, s, _, _ = _coefficients(process, sigma)
        return _x0_from_output(pred, x_t, s, s * sigma, prediction)
    if prediction is Prediction.FLOW:
        dsigma_t, sigma_t, denominator = _flow_coefficients(process, sigma)
        return (dsigma_t * x_t - sigma_t * pred) / denominator
    raise ValueError(f"unknown prediction {prediction!r}; valid: {[p.value for p in Prediction]}")


def prediction_from_x0(x0: Tensor, x_t: Tensor, sigma: Tensor, process: Process, prediction: Prediction) -> Tensor:
    """What a network of the given kind would output when its x_0 estimate is ``x0``."""
    _, s, ds, dsig = _coefficients(process, sigma)
    alpha, sigma_t = s, s * sigma
    eps = (x_t - alpha * x0) / sigma_t
    if prediction is Prediction.EPSILON:
        return eps
    if prediction is Prediction.V:
        return alpha * eps - sigma_t * x0
    if prediction is Prediction.SCORE:
        return -eps / sigma_t
    if prediction is Prediction.X0:
        return x0
    if prediction is Prediction.FLOW:
        dsigma_t, _, _ = _flow_coefficients(process, sigma)
        return ds * x0 + dsigma_t * eps
    raise ValueError(f"unknown prediction {prediction!r}; valid: {[p.value for p in Prediction]}")


def edm_noise_input(sigma: Tensor) -> Tensor:
    """c_noise = ln(sigma) / 4, the noise conditioning of EDM's preconditioning (Karras et al. 2022, Table 1)."""
    return torch.log(sigma) / 4


class PredictionAdapter:
    """Wrap ``net(x_t, timestep, **cond)`` of a continuous-time process as D(x_hat, sigma).

    The network sees its own coordinates: x_t = s(t) x_hat at t = t(sigma), and ``timestep = time_scale * t``
    (1 for networks conditioned on t itself; 1000 for the flow-matching transformers of SD3 / Flux, which
    take t in [0, 1000] as diffusers passes it, or 999 for score_sde's continuous DDPM models), or
    ``noise_input(sigma)`` where given (``edm_noise_input``: samplerlab's own networks, whatever they predict).
    """

    def __init__(
        self,
        net: Callable,
        process: Process,
        prediction: Prediction | str,
        time_scale: float = 1.0,
        noise_input: Callable[[Tensor], Tensor] | None = None,
    ):
        self.net = net
        self.process = process
        self.prediction = Prediction(prediction)
        self.time_scale = float(time_scale)
        self.noise_input = noise_input

    def output(self, x_t: Tensor, t: Tensor, **cond) -> Tensor:
        """The network's own output at x_t and process time t (one per sample): what a loss on the
        network's prediction (flow matching's velocity) compares with its target."""
        if self.noise_input is None:
            return self.net(x_t, self.time_scale * t, **cond)
        return self.net(x_t, self.noise_input(self.process.sigma(t.to(torch.float64))).to(t.dtype), **cond)

    def __call__(self, x: Tensor, sigma, **cond) -> Tensor:
        sig = as_batch_sigma(sigma, x)
        t, s, _, _ = _coefficients(self.process, sig)
        x_t = s * x
        return x0_from_prediction(self.output(x_t, t.reshape(-1), **cond), x_t, sig, self.process, self.prediction)


class DiscreteDDPMAdapter:
    """A discrete-time DDPM network ``net(x_t, timestep, **cond)`` as D(x_hat, sigma).

    Timestep k has alpha_bar_k; its noise level is sigma_k = sqrt((1 - alpha_bar_k) / alpha_bar_k)
    (Karras et al. 2022, Appendix C.1). A continuous sigma maps to a fractional timestep by
    linear interpolation of log sigma_k over k (or the nearest k with ``round_timesteps``).
    The input is x_t = x_hat / sqrt(1 + sigma^2).
    """

    def __init__(
        self,
        net: Callable,
        alphas_cumprod: Tensor,
        prediction: Prediction | str = Prediction.EPSILON,
        round_timesteps: bool = False,
    ):
        abar = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
        if abar.ndim != 1 or len(abar) < 2 or not bool(torch.all(abar[1:] < abar[:-1])):
            raise ValueError("alphas_cumprod must be a 1-D strictly decreasing sequence of length >= 2")
        self.net = net
        self.prediction = Prediction(prediction)
        if self.prediction is Prediction.FLOW:
            raise ValueError("discrete DDPM prediction must be epsilon, v, score or x0, got 'flow'")
        self.round_timesteps = round_timesteps
        self.sigmas = torch.sqrt((1 - abar) / abar)
        self.log_sigmas = torch.log(self.sigmas)

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def timestep(self, sigma: Tensor) -> Tensor:
        """Fractional timestep k(sigma), clamped to [0, K-1]."""
        ls = torch.log(sigma.to(torch.float64).clamp(self.sigma_min, self.sigma_max))
        idx = torch.searchsorted(self.log_sigmas, ls).clamp(1, len(self.log_sigmas) - 1)
        lo, hi = self.log_sigmas[idx - 1], self.log_sigmas[idx]
        k = (idx - 1) + (ls - lo) / (hi - lo)
        return k.round() if self.round_timesteps else k

    def __call__(self, x: Tensor, sigma, **cond) -> Tensor:
        sig = as_batch_sigma(sigma, x)
        k = self.timestep(sig.reshape(-1))
        s = 1 / torch.sqrt(1 + sig**2)  # the VP process in sigma form: alpha = s, sigma_t = s sigma
        x_t = s * x
        out = self.net(x_t, k.to(x.dtype), **cond)
        return _x0_from_output(out, x_t, s, s * sig, self.prediction)


class EDMPrecond:
    """EDM preconditioning (Karras et al. 2022, Table 1 and eq. 7):

    D(x, sigma) = c_skip x + c_out F(c_in x, c_noise), with
    c_skip = sd^2 / (sigma^2 + sd^2), c_out = sigma sd / sqrt(sigma^2 + sd^2),
    c_in = 1 / sqrt(sigma^2 + sd^2), c_noise = ln(sigma) / 4.
    ``net(x_in, c_noise, **cond)`` is the raw network F.
    """

    def __init__(self, net: Callable, sigma_data: float = 0.5):
        self.net = net
        self.sigma_data = sigma_data

    def coefficients(self, sigma: Tensor):
        sd = self.sigma_data
        c_skip = sd**2 / (sigma**2 + sd**2)
        c_out = sigma * sd / torch.sqrt(sigma**2 + sd**2)
        c_in = 1 / torch.sqrt(sigma**2 + sd**2)
        return c_skip, c_out, c_in, edm_noise_input(sigma)

    def __call__(self, x: Tensor, sigma, **cond) -> Tensor:
        sig = as_batch_sigma(sigma, x)
        c_skip, c_out, c_in, c_noise = self.coefficients(sig)
        return c_skip * x + c_out * self.net(c_in * x, c_noise.reshape(-1), **cond)


class ClassifierFreeGuidance:
    """D_w = D(x, sigma; uncond) + w (D(x, sigma; cond) - D(x, sigma; uncond)) (Ho & Salimans 2022, eq. 6).

    ``uncond`` are the keyword arguments that select the unconditional model
    (e.g. ``{"class_labels": None}``); they override the caller's conditioning. ``interval``
    (sigma_lo, sigma_hi) applies guidance only to noise levels inside it and the conditional model
    elsewhere (Kynkäänniemi et al. 2024, "Applying guidance in a limited interval"); per-sample
    sigmas are handled sample by sample. Two model calls where guidance applies, one elsewhere.
    """

    def __init__(
        self, denoiser: Denoiser, scale: float, uncond: dict | None = None, interval: tuple[float, float] | None = None
    ):
        if interval is not None and not 0 <= interval[0] < interval[1]:
            raise ValueError(f"guidance interval must be (sigma_lo, sigma_hi) with 0 <= lo < hi, got {interval}")
        self.denoiser = denoiser
        self.scale = scale
        self.uncond = uncond or {}
        self.interval = interval

    def weight(self, sigma: Tensor) -> Tensor:
        """The guidance scale at each noise level (1: the plain conditional model)."""
        if self.interval is None:
            return torch.full_like(sigma, self.scale)
        lo, hi = self.interval
        return torch.where((sigma >= lo) & (sigma <= hi), torch.full_like(sigma, self.scale), torch.ones_like(sigma))

    def __call__(self, x: Tensor, sigma, **cond) -> Tensor:
        d_cond = self.denoiser(x, sigma, **cond)
        if self.interval is None and self.scale == 1.0:  # decided on the host: no device sync
            return d_cond
        w = self.weight(as_batch_sigma(sigma, x))
        # outside a guidance interval the unconditional call is skipped (one host sync per call, only then)
        if self.interval is not None and bool((w == 1.0).all()):
            return d_cond
        d_uncond = self.denoiser(x, sigma, **{**cond, **self.uncond})
        return d_uncond + w * (d_cond - d_uncond)


class LevelShift:
    """D evaluated at a recalibrated noise level: the model is asked for D(x, m(sigma)) where m maps each
    positive level sigma_i of a grid to ``model_sigmas[i]``, log-linearly between levels and by the nearest
    level's log-offset beyond them.

    A few-step sampler's state at sigma_i is not distributed as the model's training inputs at sigma_i (the
    "exposure bias" of Li et al. 2024, "Alleviating exposure bias in diffusion models through sampling with
    shifted time steps", ICLR); evaluating the model at a shifted level corrects the trajectory with one
    parameter per step, for any solver, and ``samplerlab calibrate`` fits them (LD3, Tong et al. 2025, also
    decouples the model's input time from the solver's). The solver's own arithmetic keeps the grid's sigmas.
    No extra model calls."""

    def __init__(self, denoiser: Denoiser, grid_sigmas, model_sigmas):
        levels = torch.as_tensor(grid_sigmas, dtype=torch.float64)
        levels = levels[levels > 0]
        shifted = torch.as_tensor(model_sigmas, dtype=torch.float64)
        if levels.shape != shifted.shape or not bool((shifted > 0).all() & torch.isfinite(shifted).all()):
            raise ValueError(
                f"model_sigmas must be one finite positive level per positive grid level ({len(levels)}), "
                f"got {shifted.tolist()}"
            )
        order = torch.argsort(levels)
        self.denoiser = denoiser
        self._log_levels = torch.log(levels[order])  # ascending knots
        self._log_offsets = (torch.log(shifted) - torch.log(levels))[order]

    @property
    def dtype(self):
        return model_dtype(self.denoiser)

    def model_sigma(self, sigma: Tensor) -> Tensor:
        """m(sigma): the level the model is evaluated at."""
        log_sigma = torch.log(sigma.to(torch.float64))  # on sigma's device: no host sync
        knots, offsets = self._log_levels.to(log_sigma.device), self._log_offsets.to(log_sigma.device)
        if len(knots) == 1:
            offset = offsets.expand_as(log_sigma)
        else:
            clamped = log_sigma.clamp(knots[0], knots[-1])
            hi = torch.searchsorted(knots, clamped).clamp(1, len(knots) - 1)
            w = (clamped - knots[hi - 1]) / (knots[hi] - knots[hi - 1])
            offset = offsets[hi - 1] + w * (offsets[hi] - offsets[hi - 1])
        return (sigma.to(torch.float64) * torch.exp(offset)).to(sigma.dtype)  # exact where the offset is 0

    def __call__(self, x: Tensor, sigma, **cond) -> Tensor:
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        return self.denoiser(x, self.model_sigma(sigma), **cond)


def model_dtype(denoiser) -> torch.dtype | None:
    """The floating-point dtype a denoiser computes in, where it declares one: a ``dtype`` attribute (the
    analytic models), the parameters of a module, or those of the network it wraps (``net``); else None."""
    for candidate in (
        denoiser,
        getattr(denoiser, "net", None),
        getattr(getattr(denoiser, "net", None), "module", None),
    ):
        if candidate is None:
            continue
        declared = getattr(candidate, "dtype", None)
        if isinstance(declared, torch.dtype):
            return declared
        if isinstance(candidate, torch.nn.Module):
            for p in candidate.parameters():
                if p.is_floating_point():
                    return p.dtype
    return None


class NFECounter:
    """Counts model calls (one batched call = one NFE) and the wall time spent inside them; refuses an
    output that is not a floating-point tensor of the input's shape (a wrong shape would broadcast)."""

    def __init__(self, denoiser: Denoiser):
        self.denoiser = denoiser
        self.calls = 0
        self.seconds = 0.0

    def __call__(self, x: Tensor, sigma, **cond) -> Tensor:
        start = time.perf_counter()
        out = self.denoiser(x, sigma, **cond)
        if not isinstance(out, Tensor) or out.shape != x.shape or not out.is_floating_point():
            got = f"shape {tuple(out.shape)}, {out.dtype}" if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(
                f"the model returned {got} for an input of shape {tuple(x.shape)}: a denoiser D(x, sigma) must "
                "return a floating-point tensor of its input's shape"
            )
        if out.is_cuda:
            torch.cuda.synchronize(out.device)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return out


class X0Correction(Protocol):
    def __call__(self, x0: Tensor) -> Tensor: ...


class Clip:
    """Clip x0_hat to [low, high] (Ho et al. 2020 clip predicted images to [-1, 1])."""

    def __init__(self, low: float = -1.0, high: float = 1.0):
        if not low < high:
            raise ValueError(f"Clip needs low < high, got low={low}, high={high}")
        self.low, self.high = low, high

    def __call__(self, x0: Tensor) -> Tensor:
        return x0.clamp(self.low, self.high)


class DynamicThreshold:
    """Dynamic thresholding (Saharia et al. 2022, Sec. 2.3): per sample, s = max(bound, the
    ``percentile`` quantile of |x0_hat|); x0_hat <- clip(x0_hat, -s, s) * bound / s.
    (The paper uses bound = 1 for data in [-1, 1].)"""

    def __init__(self, percentile: float = 0.995, bound: float = 1.0):
        if not 0 < percentile <= 1:
            raise ValueError(f"percentile must be in (0, 1], got {percentile}")
        if not bound > 0:
            raise ValueError(f"bound must be positive, got {bound}")
        self.percentile, self.bound = percentile, bound

    def __call__(self, x0: Tensor) -> Tensor:
        flat = x0.reshape(x0.shape[0], -1).abs()
        s = torch.quantile(
            flat.to(torch.float32 if flat.dtype == torch.float16 else flat.dtype), self.percentile, dim=1
        )
        s = s.clamp_min(self.bound).to(x0.dtype).reshape(-1, *([1] * (x0.ndim - 1)))
        return torch.maximum(torch.minimum(x0, s), -s) * (self.bound / s)


class CorrectedDenoiser:
    """Apply an x0 correction (clipping, dynamic thresholding) to every D(x, sigma): a hook that
    works with every solver because solvers only ever see D."""

    def __init__(self, denoiser: Denoiser, correction: X0Correction):
        self.denoiser = denoiser
        self.correction = correction

    def __call__(self, x: Tensor, sigma, **cond) -> Tensor:
        return self.correction(self.denoiser(x, sigma, **cond))
