"""Audio front end of SGMSE+ (Richter et al. 2023, Sec. IV-A) without torchaudio.

  wav (16 kHz) -> complex STFT (n_fft 510, hop 128, periodic Hann, centred) -> 256 frequency bins
  -> amplitude compression c -> beta |c|^alpha e^{i angle c} (alpha 0.5, beta 0.15)

and the exact inverse. Signals are normalised by the noisy recording's peak |y| (both x and y with the
same factor), and padded so the frame count is a multiple of the network's down-sampling factor.
Files are read and written with soundfile and resampled with soxr.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..io import atomic_path

__all__ = [
    "SpecConfig",
    "wav_to_spec",
    "spec_to_wav",
    "compress",
    "decompress",
    "normalise_pair",
    "pad_to_multiple",
    "load_wav",
    "min_wav_samples",
    "save_wav",
]


@dataclass(frozen=True)
class SpecConfig:
    sample_rate: int = 16000
    n_fft: int = 510
    hop: int = 128
    alpha: float = 0.5
    beta: float = 0.15

    def window(self, device=None, dtype=torch.float32) -> Tensor:
        return torch.hann_window(self.n_fft, periodic=True, device=device, dtype=dtype)


def compress(c: Tensor, alpha: float = 0.5, beta: float = 0.15) -> Tensor:
    """beta |c|^alpha e^{i angle c}."""
    return beta * c.abs() ** alpha * torch.exp(1j * c.angle())


def decompress(c: Tensor, alpha: float = 0.5, beta: float = 0.15) -> Tensor:
    """The exact inverse of ``compress``: (|c| / beta)^{1/alpha} e^{i angle c}."""
    return (c.abs() / beta) ** (1 / alpha) * torch.exp(1j * c.angle())


def wav_to_spec(wav: Tensor, config: SpecConfig = SpecConfig()) -> Tensor:
    """(..., samples) real -> (..., n_fft // 2 + 1, frames) compressed complex spectrogram."""
    spec = torch.stft(
        wav, config.n_fft, config.hop, window=config.window(wav.device, wav.dtype), center=True, return_complex=True
    )
    return compress(spec, config.alpha, config.beta)


def spec_to_wav(spec: Tensor, length: int, config: SpecConfig = SpecConfig()) -> Tensor:
    """Inverse of ``wav_to_spec`` (decompression, then the inverse STFT) to ``length`` samples."""
    raw = decompress(spec, config.alpha, config.beta)
    real_dtype = torch.float64 if raw.dtype == torch.complex128 else torch.float32
    return torch.istft(
        raw, config.n_fft, config.hop, window=config.window(raw.device, real_dtype), center=True, length=length
    )


def normalise_pair(clean: Tensor, noisy: Tensor) -> tuple[Tensor, Tensor, float]:
    """Divide both by the noisy recording's peak |y| (SGMSE+'s "noisy" normalisation); returns the factor."""
    peak = float(noisy.abs().max())
    if peak == 0:
        raise ValueError("the noisy recording is silent: cannot normalise by its peak")
    return clean / peak, noisy / peak, peak


def pad_to_multiple(wav: Tensor, multiple: int, config: SpecConfig = SpecConfig()) -> Tensor:
    """Zero-pad the end so the spectrogram has a multiple of ``multiple`` frames."""
    frames = wav.shape[-1] // config.hop + 1
    target = -(-frames // multiple) * multiple
    extra = (target - 1) * config.hop - wav.shape[-1]
    return torch.nn.functional.pad(wav, (0, max(0, extra)))


def load_wav(path: str | Path, sample_rate: int = 16000, min_samples: int = 1) -> Tensor:
    """A mono float32 signal at ``sample_rate`` (multi-channel files are averaged; resampled with soxr).
    Refused with an error naming the file: unreadable, truncated (a WAV whose data chunk claims more bytes
    than the file holds), non-finite samples, or fewer than ``min_samples`` samples."""
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    try:
        info = sf.info(str(path))
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as err:
        raise ValueError(f"{path}: not a readable audio file ({err})") from None
    short = _truncated_by(info)
    if short:
        raise ValueError(f"{path}: truncated ({short}); re-export or re-copy the file")
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).any(axis=1).sum())
        raise ValueError(f"{path}: {bad} of {len(data)} samples are NaN or infinite")
    mono = data.mean(axis=1)
    if rate != sample_rate and len(mono):
        import soxr

        mono = soxr.resample(mono, rate, sample_rate).astype(np.float32)
    if len(mono) < min_samples:
        raise ValueError(
            f"{path}: {len(mono)} samples ({1000 * len(mono) / sample_rate:.1f} ms at {sample_rate} Hz); "
            f"at least {min_samples} ({1000 * min_samples / sample_rate:.1f} ms) are needed"
        )
    return torch.from_numpy(np.ascontiguousarray(mono))


def _truncated_by(info) -> str:
    """libsndfile reads what a truncated WAV holds and notes the gap in its header dump ("data : 32000
    (should be 1956)"); '' when the file is whole."""
    import re

    m = re.search(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", getattr(info, "extra_info", ""), re.MULTILINE)
    if m and int(m.group(2)) < int(m.group(1)):
        return f"its header announces {m.group(1)} bytes of audio, the file holds {m.group(2)}"
    return ""


def min_wav_samples(spec: "SpecConfig") -> int:
    """The shortest signal the STFT front end takes: one window (n_fft samples)."""
    return spec.n_fft


def save_wav(path: str | Path, wav: Tensor, sample_rate: int = 16000) -> Path:
    """16-bit PCM, written atomically; samples outside [-1, 1] are clipped."""
    import soundfile as sf

    path = Path(path)
    data = wav.detach().cpu().double().clamp(-1, 1).numpy()
    with atomic_path(path) as tmp:
        sf.write(str(tmp), data, sample_rate, subtype="PCM_16", format="WAV")
    return path
