"""The exact Gaussian-prior model of compressed speech spectra, and its OUVE denoiser.

Model (in the compressed STFT domain of ``frontend``, after normalising each pair by the noisy peak):
clean coefficients X_{f,n} ~ CN(0, v_x(f)) and the difference N = Y - X ~ CN(0, v_n(f)), independent
over frequency f and frame n, with variances estimated from the clean training split. Then
p(x_0 | y) is Gaussian in closed form, per coefficient (complex Wiener filter, e.g. Ephraim & Malah 1984):

    E[X | Y] = W Y,  W = v_x / (v_x + v_n);  Var[X | Y] = P = v_x v_n / (v_x + v_n)  (P / 2 per real part).

samplerlab samples the OUVE residual u = x - y (``schedules.OUVE``), whose clean value u_0 = X - Y
has the Gaussian posterior N(mu, P / 2) per real component with mu = (W - 1) Y. The denoiser of a
Gaussian is linear (Tweedie; Efron 2011):

    D(u_hat; sigma, y) = mu + (P / 2) / (P / 2 + sigma^2) (u_hat - mu).

So every solver enhances real recordings with a model whose score is exact: metric differences between
samplers are discretisation error alone, and the gap to a trained network is fitting error.

Two priors for X, both Gaussian so that all of the above stays closed form:
- ``stationary`` (the model above): v_x(f) from the clean training split. Speech is sparse in time,
  so this prior spreads speech energy over silent frames too, and a posterior *sample* carries the
  error variance P on top of the Wiener estimate's: it does not beat the noisy input on the
  synthetic corpus (measured, see docs/speech.md).
- ``adaptive`` (the default): v_x(f, n) = max(mean of |Y|^2 over ``smooth_frames`` frames - v_n(f),
  floor v_n(f)), the local maximum-likelihood estimate of the clean power from y itself
  (the "power subtraction" a priori SNR of Ephraim & Malah 1984), with v_n(f) still from the
  training split. Given y the model is again a Gaussian with a closed-form posterior.
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

__all__ = ["PRIORS", "GaussianSpeechPrior", "fit_gaussian_prior", "corpus_prior", "PRIOR_FILE", "complex_to_channels", "channels_to_complex"]


def complex_to_channels(c: Tensor) -> Tensor:
    """(..., F, T) complex -> (..., 2, F, T) real [Re, Im]."""
    return torch.stack([c.real, c.imag], dim=-3)


def channels_to_complex(x: Tensor) -> Tensor:
    return torch.complex(x[..., 0, :, :], x[..., 1, :, :])


PRIORS = ("adaptive", "stationary")


@dataclass
class GaussianSpeechPrior:
    clean_var: Tensor  # (F,) E|X_f|^2
    noise_var: Tensor  # (F,) E|Y_f - X_f|^2
    spec: SpecConfig = SpecConfig()
    frames: int = 0  # frames the variances were estimated from
    files: int = 0
    mode: str = "adaptive"
    smooth_frames: int = 5
    floor: float = 1e-3

    def __post_init__(self):
        self.clean_var = torch.as_tensor(self.clean_var, dtype=torch.float64)
        self.noise_var = torch.as_tensor(self.noise_var, dtype=torch.float64)
        if self.clean_var.shape != self.noise_var.shape or self.clean_var.ndim != 1:
            raise ValueError("clean_var and noise_var must be 1-D of the same length (one per frequency bin)")
        if bool((self.clean_var <= 0).any()) or bool((self.noise_var <= 0).any()):
            raise ValueError("variances must be positive")
        if self.mode not in PRIORS:
            raise ValueError(f"unknown Gaussian prior {self.mode!r}; valid: {', '.join(PRIORS)}")
        if self.smooth_frames < 1 or self.smooth_frames % 2 == 0:
            raise ValueError(f"smooth_frames must be odd and >= 1, got {self.smooth_frames}")

    def with_mode(self, mode: str) -> "GaussianSpeechPrior":
        return dataclasses.replace(self, mode=mode)

    def variances(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """(v_x, v_n) broadcastable against (..., F, T) for the observation y in channels (..., 2, F, T)."""
        vn = self._per_bin(self.noise_var, y)
        if self.mode == "stationary":
            return self._per_bin(self.clean_var, y), vn
        power = y[..., 0, :, :] ** 2 + y[..., 1, :, :] ** 2
        flat = power.reshape(-1, 1, power.shape[-1])
        k = self.smooth_frames
        local = torch.nn.functional.avg_pool1d(flat, k, 1, k // 2, count_include_pad=False).reshape(power.shape)
        return torch.maximum(local - vn, self.floor * vn), vn

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

    def __call__(self, u_hat: Tensor, sigma, *, y: Tensor) -> Tensor:
        """The exact denoiser of the OUVE residual u_0 = x_0 - y given y (module docstring)."""
        vx, vn = self.variances(y)
        mu = (vx / (vx + vn) - 1).unsqueeze(-3) * y
        half_p = (vx * vn / (vx + vn) / 2).unsqueeze(-3)
        sig = torch.as_tensor(sigma, dtype=u_hat.dtype, device=u_hat.device).reshape(-1, *([1] * (u_hat.ndim - 1)))
        return mu + half_p / (half_p + sig**2) * (u_hat - mu)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, clean_var=self.clean_var.numpy(), noise_var=self.noise_var.numpy(),
                         spec=json.dumps(self.spec.__dict__), frames=self.frames, files=self.files)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "GaussianSpeechPrior":
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"{path}: no such Gaussian prior file (samplerlab speech fit-gaussian writes one)")
        z = np.load(path, allow_pickle=False)
        return cls(torch.from_numpy(z["clean_var"]), torch.from_numpy(z["noise_var"]),
                   SpecConfig(**json.loads(str(z["spec"]))), int(z["frames"]), int(z["files"]))


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


def corpus_prior(corpus: str | Path, mode: str = "adaptive", progress: bool = False) -> GaussianSpeechPrior:
    """The prior of a corpus's train split: loaded from CORPUS/gaussian_prior.npz, or fitted and saved there."""
    from .data import find_speech_pairs

    cached = Path(corpus) / PRIOR_FILE
    if cached.exists():
        return GaussianSpeechPrior.load(cached).with_mode(mode)
    prior = fit_gaussian_prior(find_speech_pairs(corpus, "train"), progress=progress)
    prior.save(cached)
    return prior.with_mode(mode)
