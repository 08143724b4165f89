"""The exact Gaussian-prior model of compressed speech spectra, and its OUVE denoiser.

Model (in the compressed STFT domain of ``frontend``, after normalising each pair by the noisy peak):
clean coefficients X_{f,n} ~ CN(0, v_x(f)) and the difference N = Y - X ~ CN(0, v_n(f)), independent
over frequency f and frame n, with variances estimated from the clean training split. Then
p(x_0 | y) is Gaussian in closed form, per coefficient (complex Wiener filter, e.g. Ephraim & Malah 1984):

    E[X | Y] = W Y,  W = v_x / (v_x + v_n);  Var[X | Y] = P = v_x v_n / (v_x + v_n)  (P / 2 per real part).

samplerlab samples the OUVE residual u = x - y (``processes.OUVE``), whose clean value u_0 = X - Y
has the Gaussian posterior N(mu, P / 2) per real component with mu = (W - 1) Y. The denoiser of a
Gaussian is linear (Tweedie; Efron 2011):

    D(u_hat; sigma, y) = mu + (P / 2) / (P / 2 + sigma^2) (u_hat - mu).

So every solver enhances real recordings with a model whose score is exact: metric differences between
samplers are discretisation error alone, and the gap to a trained network is fitting error.

Three Gaussian models, all Gaussian given y so that everything above stays closed form:
- ``stationary`` (the model above, as the speech issue specifies): v_x(f) and v_n(f) from the clean
  training split. Speech is sparse in time, so this prior spreads speech energy over silent frames
  too, and a posterior *sample* carries the error variance P on top of the Wiener estimate's: it does
  not beat the noisy input on the synthetic corpus (measured, see docs/speech.md).
- ``adaptive``: v_x(f, n) = max(local mean of |Y|^2 - v_n(f), floor v_n(f)), the local maximum-
  likelihood estimate of the clean power from y itself (the "power subtraction" a priori SNR of
  Ephraim & Malah 1984, Sec. IV), with v_n(f) still from the training split. The training split mixes
  SNRs from 0 to 20 dB and four noise colours, so one v_n(f) is wrong for almost every recording.
- ``utterance`` (the default): the same v_x(f, n), and v_n(f) estimated from the recording itself:
  the mean of |Y_f|^2 over its quietest ``noise_quantile`` of frames (by frame energy), where speech
  is absent and Y = N (a fixed-quantile form of Martin 2001's minimum statistics). This empirical-Bayes
  model needs nothing from training; it is what makes a Gaussian prior beat the noisy input. It
  assumes pauses: with speech in more than 90 % of the frames it overestimates the noise, and it
  follows non-stationary noise (babble) only on average.
The local mean runs over ``smooth_frames`` frames x ``smooth_bins`` frequency bins.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..io import atomic_path
from .frontend import SpecConfig, normalise_pair, wav_to_spec

__all__ = [
    "PRIORS",
    "GaussianSpeechPrior",
    "fit_gaussian_prior",
    "corpus_prior",
    "PRIOR_FILE",
    "complex_to_channels",
    "channels_to_complex",
]


def complex_to_channels(c: Tensor) -> Tensor:
    """(..., F, T) complex -> (..., 2, F, T) real [Re, Im]."""
    return torch.stack([c.real, c.imag], dim=-3)


def channels_to_complex(x: Tensor) -> Tensor:
    return torch.complex(x[..., 0, :, :], x[..., 1, :, :])


PRIORS = ("utterance", "adaptive", "stationary")


@dataclass
class GaussianSpeechPrior:
    clean_var: Tensor | None = None  # (F,) E|X_f|^2 over the training split; None: ``utterance`` only
    noise_var: Tensor | None = None  # (F,) E|Y_f - X_f|^2
    spec: SpecConfig = SpecConfig()
    frames: int = 0  # frames the variances were estimated from
    files: int = 0
    mode: str = "utterance"
    smooth_frames: int = 3
    smooth_bins: int = 3
    noise_quantile: float = 0.1
    floor: float = 1e-3
    # the last y's (v_x, v_n): a sampler calls the denoiser with the same y at every step
    _last: tuple | None = dataclasses.field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.mode not in PRIORS:
            raise ValueError(f"unknown Gaussian prior {self.mode!r}; valid: {', '.join(PRIORS)}")
        for name in ("smooth_frames", "smooth_bins"):
            k = getattr(self, name)
            if k < 1 or k % 2 == 0:
                raise ValueError(f"{name} must be odd and >= 1, got {k}")
        if not 0 < self.noise_quantile <= 1:
            raise ValueError(f"noise_quantile must be in (0, 1], got {self.noise_quantile}")
        if (self.clean_var is None) != (self.noise_var is None):
            raise ValueError("give both clean_var and noise_var, or neither")
        if self.clean_var is None:
            if self.mode != "utterance":
                raise ValueError(
                    f"the {self.mode} Gaussian prior needs variances fitted on a training split "
                    "(fit_gaussian_prior / samplerlab speech fit-gaussian); only 'utterance' needs none"
                )
            return
        self.clean_var = torch.as_tensor(self.clean_var, dtype=torch.float64)
        self.noise_var = torch.as_tensor(self.noise_var, dtype=torch.float64)
        if self.clean_var.shape != self.noise_var.shape or self.clean_var.ndim != 1:
            raise ValueError("clean_var and noise_var must be 1-D of the same length (one per frequency bin)")
        if bool((self.clean_var <= 0).any()) or bool((self.noise_var <= 0).any()):
            raise ValueError("variances must be positive")

    def with_mode(self, mode: str) -> "GaussianSpeechPrior":
        return dataclasses.replace(self, mode=mode)

    @property
    def fitted(self) -> bool:
        """Whether training-split variances are present (``stationary`` / ``adaptive`` need them)."""
        return self.clean_var is not None

    def variances(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """(v_x, v_n) broadcastable against (..., F, T) for the observation y in channels (..., 2, F, T)."""
        if self.mode == "stationary":
            return self._per_bin(self.clean_var, y), self._per_bin(self.noise_var, y)
        power = y[..., 0, :, :] ** 2 + y[..., 1, :, :] ** 2
        vn = self.utterance_noise(power) if self.mode == "utterance" else self._per_bin(self.noise_var, y)
        flat = power.reshape(-1, 1, *power.shape[-2:])
        kf, kt = self.smooth_bins, self.smooth_frames
        local = torch.nn.functional.avg_pool2d(flat, (kf, kt), 1, (kf // 2, kt // 2), count_include_pad=False)
        return torch.maximum(local.reshape(power.shape) - vn, self.floor * vn), vn

    def utterance_noise(self, power: Tensor) -> Tensor:
        """v_n(f) of each recording, shaped (..., F, 1): the mean power of its quietest frames. Frames of
        exactly zero energy (padding) are not counted."""
        energy = power.sum(-2)  # (..., T)
        count = (energy > 0).sum(-1, keepdim=True).clamp_min(1)
        k = max(1, int(self.noise_quantile * power.shape[-1]))
        keep = torch.ceil(self.noise_quantile * count).clamp(1, k)  # per recording: its own quantile
        order = torch.where(energy > 0, energy, torch.inf).argsort(-1)[..., :k]
        chosen = torch.gather(power, -1, order.unsqueeze(-2).expand(*power.shape[:-1], k))
        weight = (torch.arange(k, device=power.device) < keep).to(power.dtype).unsqueeze(-2)
        vn = (chosen * weight).sum(-1, keepdim=True) / keep.unsqueeze(-1)
        return vn.clamp_min(torch.finfo(power.dtype).tiny)

    def gain_for(self, y: Tensor) -> Tensor:
        vx, vn = self.variances(y)
        return vx / (vx + vn)

    @property
    def gain(self) -> Tensor:
        """The Wiener gain W(f) = v_x / (v_x + v_n)."""
        return self.clean_var / (self.clean_var + self.noise_var)

    @property
    def posterior_var(self) -> Tensor:
        """P(f) = Var[X | Y] of a complex coefficient."""
        return self.clean_var * self.noise_var / (self.clean_var + self.noise_var)

    def _per_bin(self, v: Tensor, like: Tensor) -> Tensor:
        return v.to(like.dtype).to(like.device).reshape(-1, 1)  # (F, 1): broadcasts over frames

    def posterior_mean(self, y: Tensor) -> Tensor:
        """E[x_0 | y] in [Re, Im] channels (..., 2, F, T): the Wiener estimate."""
        return self.gain_for(y).unsqueeze(-3) * y

    def _variances_of(self, y: Tensor) -> tuple[Tensor, Tensor]:
        last = self._last
        if last is not None and last[0] is y and last[1] == y._version:  # same tensor, not modified in place
            return last[2]
        out = self.variances(y)
        self._last = (y, y._version, out)
        return out

    def __call__(self, u_hat: Tensor, sigma, *, y: Tensor) -> Tensor:
        """The exact denoiser of the OUVE residual u_0 = x_0 - y given y (module docstring)."""
        vx, vn = self._variances_of(y)
        mu = (vx / (vx + vn) - 1).unsqueeze(-3) * y
        half_p = (vx * vn / (vx + vn) / 2).unsqueeze(-3)
        sig = torch.as_tensor(sigma, dtype=u_hat.dtype, device=u_hat.device).reshape(-1, *([1] * (u_hat.ndim - 1)))
        return mu + half_p / (half_p + sig**2) * (u_hat - mu)

    def save(self, path: str | Path) -> Path:
        if not self.fitted:
            raise ValueError("an utterance-only Gaussian prior has no fitted variances to save")
        path = Path(path)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(
                    f,
                    clean_var=self.clean_var.numpy(),
                    noise_var=self.noise_var.numpy(),
                    spec=json.dumps(self.spec.__dict__),
                    frames=self.frames,
                    files=self.files,
                )
        return path

    @classmethod
    def load(cls, path: str | Path) -> "GaussianSpeechPrior":
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"{path}: no such Gaussian prior file (samplerlab speech fit-gaussian writes one)")
        try:
            z = np.load(path, allow_pickle=False)
            return cls(
                torch.from_numpy(z["clean_var"]),
                torch.from_numpy(z["noise_var"]),
                SpecConfig(**json.loads(str(z["spec"]))),
                int(z["frames"]),
                int(z["files"]),
            )
        except (OSError, ValueError, KeyError, TypeError, EOFError) as err:
            raise ValueError(
                f"{path}: not a Gaussian prior file ({type(err).__name__}: {err}); "
                "samplerlab speech fit-gaussian writes one"
            ) from None


def fit_gaussian_prior(pairs, spec: SpecConfig = SpecConfig(), progress: bool = False) -> GaussianSpeechPrior:
    """Per-bin variances of clean and difference spectra over training ``pairs`` (``speech.data.SpeechPair``)."""
    from .data import load_pair

    sum_x = sum_n = None
    frames = 0
    it = pairs
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(pairs, desc="fit Gaussian prior", unit="file")
    for pair in it:
        clean, noisy = load_pair(pair, spec.sample_rate)
        if clean is None:
            raise ValueError(f"{pair.noisy}: fitting the prior needs the clean reference")
        clean, noisy, _ = normalise_pair(clean.double(), noisy.double())
        X, Y = wav_to_spec(clean, spec), wav_to_spec(noisy, spec)
        px, pn = X.abs().pow(2).sum(-1), (Y - X).abs().pow(2).sum(-1)
        sum_x = px if sum_x is None else sum_x + px
        sum_n = pn if sum_n is None else sum_n + pn
        frames += X.shape[-1]
    if not frames:
        raise ValueError("no training pairs to fit the Gaussian prior")
    return GaussianSpeechPrior(sum_x / frames, sum_n / frames, spec, frames, len(pairs))


PRIOR_FILE = "gaussian_prior.npz"  # where a corpus keeps its fitted prior


def corpus_prior(corpus: str | Path, mode: str = "utterance", progress: bool = False) -> GaussianSpeechPrior:
    """The prior of a corpus's train split: loaded from CORPUS/gaussian_prior.npz, or fitted and saved there.
    The ``utterance`` prior needs no training split and fits nothing."""
    from .data import find_speech_pairs

    if mode == "utterance":
        return GaussianSpeechPrior(mode=mode)
    cached = Path(corpus) / PRIOR_FILE
    if cached.exists():
        return GaussianSpeechPrior.load(cached).with_mode(mode)
    prior = fit_gaussian_prior(find_speech_pairs(corpus, "train"), progress=progress)
    prior.save(cached)
    return prior.with_mode(mode)
