"""A deterministic synthetic noisy-speech corpus (no downloads): espeak-ng speech plus coloured or babble
noise at a random SNR, in the ``{split}/{clean,noisy}/NAME.wav`` layout at 16 kHz.

Each utterance draws from its own generator (seed, split, index): a sentence from a small grammar,
an English espeak-ng voice and variant (male / female), speed 130-190 words per minute, pitch 25-75,
a noise type (white, pink 1/f, brown 1/f^2, babble of 4-6 other synthetic talkers) and an SNR
uniform in [snr_min, snr_max] dB, measured over the whole utterance. Clean and noisy are scaled by
the same factor so that the noisy peak is 0.9. ``manifest.json`` records every choice.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..io import atomic_write_text, remove_stale_temporaries
from .frontend import load_wav, save_wav

__all__ = ["CorpusConfig", "NOISE_TYPES", "make_corpus", "synthesise", "coloured_noise", "mix_at_snr", "sentence"]

NOISE_TYPES = ("white", "pink", "brown", "babble")
VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan", "en-gb-x-gbcwmd")
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5")

_ADJ = "red green small large quiet bright old young cold warm soft heavy light dark clean".split()
_NOUN = "boat house river garden window doctor teacher letter market engine bridge table morning city song".split()
_VERB = "found painted carried opened watched followed moved cleaned passed answered needed covered".split()
_PLACE = "near the station|across the field|before noon|after the rain|in the kitchen|along the road|at the end".split(
    "|"
)


def sentence(g: np.random.Generator) -> str:
    """'The ADJ NOUN VERB the ADJ NOUN PLACE.' and variants: varied phonetic content, plain English."""
    pick = lambda words: words[int(g.integers(len(words)))]  # noqa: E731
    parts = ["The", pick(_ADJ), pick(_NOUN), pick(_VERB), "the", pick(_ADJ), pick(_NOUN), pick(_PLACE)]
    if g.random() < 0.5:
        parts += ["and", "the", pick(_NOUN), pick(_VERB), "it"]
    return " ".join(parts) + "."


@dataclass
class CorpusConfig:
    train: int = 200
    valid: int = 20
    test: int = 30
    seed: int = 0
    snr_min: float = 0.0
    snr_max: float = 20.0
    sample_rate: int = 16000
    noise_types: tuple[str, ...] = NOISE_TYPES

    def __post_init__(self):
        self.noise_types = tuple(self.noise_types)
        bad = [n for n in self.noise_types if n not in NOISE_TYPES]
        if bad:
            raise ValueError(f"unknown noise types {bad}; valid: {', '.join(NOISE_TYPES)}")
        snrs_ok = math.isfinite(self.snr_min) and math.isfinite(self.snr_max) and self.snr_min <= self.snr_max
        if min(self.train, self.valid, self.test, self.seed) < 0 or not snrs_ok:
            raise ValueError(
                f"split sizes and seed must be >= 0, snr_min <= snr_max finite; got train={self.train}, "
                f"valid={self.valid}, test={self.test}, seed={self.seed}, snr_min={self.snr_min}, snr_max={self.snr_max}"
            )


def _espeak() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("espeak-ng is not installed: apt-get install espeak-ng (Debian / Ubuntu)")
    return exe


def synthesise(text: str, voice: str, speed: int, pitch: int, sample_rate: int = 16000) -> Tensor:
    """espeak-ng speech for ``text`` at ``sample_rate`` (float32, peak-free of leading / trailing silence trim)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "s.wav"
        subprocess.run(
            [_espeak(), "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(out), text],
            check=True,
            capture_output=True,
        )
        return load_wav(out, sample_rate)


def coloured_noise(n: int, kind: str, g: np.random.Generator) -> np.ndarray:
    """Unit-variance white, pink (power ~ 1/f) or brown (~ 1/f^2) noise by spectral shaping of white noise."""
    white = g.standard_normal(n)
    if kind == "white":
        return white / white.std()
    exponent = {"pink": 0.5, "brown": 1.0}[kind]  # amplitude ~ f^-exponent
    spec = np.fft.rfft(white)
    f = np.fft.rfftfreq(n)
    f[0] = f[1] if n > 1 else 1.0
    shaped = np.fft.irfft(spec / f**exponent, n)
    return shaped / shaped.std()


def mix_at_snr(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """noise scaled so that 10 log10(P_clean / P_noise) = snr_db over the whole signal."""
    p_clean, p_noise = np.mean(clean**2), np.mean(noise**2)
    return noise * np.sqrt(p_clean / (p_noise * 10 ** (snr_db / 10)))


def _utterance(g: np.random.Generator, rate: int) -> tuple[np.ndarray, dict]:
    voice = f"{VOICES[int(g.integers(len(VOICES)))]}+{VARIANTS[int(g.integers(len(VARIANTS)))]}"
    speed, pitch = int(g.integers(130, 191)), int(g.integers(25, 76))
    text = sentence(g)
    wav = synthesise(text, voice, speed, pitch, rate).numpy().astype(np.float64)
    return wav, {"text": text, "voice": voice, "speed": speed, "pitch": pitch}


def make_corpus(out: str | Path, config: CorpusConfig = CorpusConfig(), progress: bool = False) -> Path:
    """Write the corpus under ``out``; files already there with the same manifest entry are kept (resumable)."""
    out = Path(out)
    _espeak()
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} exists and is not a folder")
    created = not out.exists()
    try:
        return _make_corpus(out, config, progress)
    except BaseException:
        # a corpus that fails before its first manifest leaves no folder behind; a started one resumes
        if created and not (out / "manifest.json").exists():
            shutil.rmtree(out, ignore_errors=True)
        raise


def _make_corpus(out: Path, config: CorpusConfig, progress: bool) -> Path:
    manifest_path = out / "manifest.json"
    manifest = {}
    if manifest_path.exists():
        try:
            manifest = json.loads(manifest_path.read_text())
        except ValueError as err:
            raise ValueError(f"{manifest_path}: not valid JSON ({err}); delete it to remake the corpus") from None
    if manifest and manifest.get("config") != json.loads(json.dumps(asdict(config))):
        raise ValueError(f"{out} holds a corpus made with other settings; use a new folder")
    for folder in [out] + [out / split / kind for split in ("train", "valid", "test") for kind in ("clean", "noisy")]:
        if folder.is_dir():
            remove_stale_temporaries(folder)  # of a run killed mid-write
    manifest = {"config": asdict(config), "files": manifest.get("files", {})}
    jobs = [
        (split, i)
        for split, n in (("train", config.train), ("valid", config.valid), ("test", config.test))
        for i in range(n)
    ]
    if progress:
        from tqdm.auto import tqdm

        jobs = tqdm(jobs, desc="corpus", unit="utt")
    split_code = {"train": 0, "valid": 1, "test": 2}
    for split, i in jobs:
        name = f"{split}_{i:05d}"
        clean_path, noisy_path = out / split / "clean" / f"{name}.wav", out / split / "noisy" / f"{name}.wav"
        if name in manifest["files"] and clean_path.exists() and noisy_path.exists():
            continue
        g = np.random.default_rng([config.seed, split_code[split], i])
        clean, meta = _utterance(g, config.sample_rate)
        kind = config.noise_types[int(g.integers(len(config.noise_types)))]
        if kind == "babble":
            talkers = int(g.integers(4, 7))
            noise = np.zeros_like(clean)
            for _ in range(talkers):
                other, _ = _utterance(g, config.sample_rate)
                other = np.resize(other, len(clean))  # repeat or cut to length
                noise += np.roll(other, int(g.integers(len(clean)))) / max(other.std(), 1e-8)
        else:
            noise = coloured_noise(len(clean), kind, g)
        snr = float(g.uniform(config.snr_min, config.snr_max))
        noisy = clean + mix_at_snr(clean, noise, snr)
        scale = 0.9 / np.abs(noisy).max()
        save_wav(clean_path, torch.from_numpy(clean * scale), config.sample_rate)
        save_wav(noisy_path, torch.from_numpy(noisy * scale), config.sample_rate)
        manifest["files"][name] = {
            **meta,
            "split": split,
            "noise": kind,
            "snr_db": round(snr, 3),
            "seconds": round(len(clean) / config.sample_rate, 3),
        }
        if len(manifest["files"]) % 25 == 0:
            atomic_write_text(manifest_path, json.dumps(manifest, indent=1) + "\n")
    atomic_write_text(manifest_path, json.dumps(manifest, indent=1) + "\n")
    return out
