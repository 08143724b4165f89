"""Paired clean / noisy speech on disk: the ``{split}/{clean,noisy}/*.wav`` layout of ``make-corpus`` and
VoiceBank-DEMAND's folder names (Valentini-Botinhao et al. 2016; 48 kHz, resampled to 16 kHz on load).

Pairs are matched by file name; a file without its partner, an empty split or an unreadable file
raises ``DataError`` naming it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from ..data.loaders import DataError
from .frontend import SpecConfig, load_wav, min_wav_samples

__all__ = ["SpeechPair", "find_pairs", "find_voicebank_pairs", "find_speech_pairs", "load_pair", "SPLITS"]

SPLITS = ("train", "valid", "test")
# VoiceBank-DEMAND: clean_trainset_28spk_wav / noisy_trainset_28spk_wav (also 56spk), clean_testset_wav / noisy_testset_wav
VOICEBANK = {"train": ("trainset_28spk_wav", "trainset_56spk_wav"), "test": ("testset_wav",)}


@dataclass(frozen=True)
class SpeechPair:
    name: str
    clean: Path | None  # None: a noisy recording without a reference
    noisy: Path


def _match(clean_dir: Path | None, noisy_dir: Path) -> list[SpeechPair]:
    if not noisy_dir.is_dir():
        raise DataError(f"{noisy_dir}: no such folder")
    noisy = {p.name: p for p in noisy_dir.glob("*.wav")}
    if not noisy:
        raise DataError(f"{noisy_dir}: no .wav files")
    if clean_dir is None:
        return [SpeechPair(p.stem, None, p) for _, p in sorted(noisy.items())]
    if not clean_dir.is_dir():
        raise DataError(f"{clean_dir}: no such folder")
    clean = {p.name: p for p in clean_dir.glob("*.wav")}
    only_noisy, only_clean = sorted(set(noisy) - set(clean)), sorted(set(clean) - set(noisy))
    if only_noisy or only_clean:
        first = (
            f"{noisy_dir / only_noisy[0]} has no clean partner in {clean_dir}"
            if only_noisy
            else f"{clean_dir / only_clean[0]} has no noisy partner in {noisy_dir}"
        )
        raise DataError(f"unpaired files: {first} ({len(only_noisy) + len(only_clean)} unpaired in all)")
    return [SpeechPair(Path(n).stem, clean[n], noisy[n]) for n in sorted(noisy)]


def find_pairs(root: str | Path, split: str) -> list[SpeechPair]:
    """root/SPLIT/clean/*.wav with root/SPLIT/noisy/*.wav (the make-corpus layout)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    root = Path(root)
    return _match(root / split / "clean", root / split / "noisy")


def find_voicebank_pairs(root: str | Path, split: str) -> list[SpeechPair]:
    """VoiceBank-DEMAND under root: clean_testset_wav + noisy_testset_wav for "test", the 28- (or 56-)
    speaker training folders for "train"."""
    root = Path(root)
    if split not in VOICEBANK:
        raise ValueError(f"VoiceBank-DEMAND has splits {', '.join(VOICEBANK)}; got {split!r}")
    for suffix in VOICEBANK[split]:
        if (root / f"noisy_{suffix}").is_dir():
            return _match(root / f"clean_{suffix}", root / f"noisy_{suffix}")
    wanted = " or ".join(f"noisy_{s}" for s in VOICEBANK[split])
    raise DataError(f"{root}: no VoiceBank-DEMAND {split} folder ({wanted})")


def find_speech_pairs(root: str | Path, split: str) -> list[SpeechPair]:
    """Either layout, recognised from the folder names."""
    root = Path(root)
    if (root / split / "noisy").is_dir():
        return find_pairs(root, split)
    if any(root.glob("noisy_*_wav")) or any(root.glob("noisy_*spk_wav")):
        return find_voicebank_pairs(root, split)
    raise DataError(f"{root}: neither {root / split / 'noisy'} (make-corpus layout) nor VoiceBank-DEMAND folders")


def load_pair(pair: SpeechPair, sample_rate: int = 16000, min_samples: int = 0) -> tuple[Tensor | None, Tensor]:
    """(clean, noisy) signals at ``sample_rate``; lengths must agree, and be at least ``min_samples``
    (default: one STFT window, ``frontend.min_wav_samples``)."""
    min_samples = min_samples or min_wav_samples(SpecConfig(sample_rate=sample_rate))
    try:
        noisy = load_wav(pair.noisy, sample_rate, min_samples)
        clean = None if pair.clean is None else load_wav(pair.clean, sample_rate, min_samples)
    except ValueError as err:
        raise DataError(str(err)) from None
    if clean is not None and clean.shape != noisy.shape:
        raise DataError(
            f"{pair.clean} and {pair.noisy} differ in length ({clean.shape[-1]} vs {noisy.shape[-1]} samples)"
        )
    return clean, noisy
