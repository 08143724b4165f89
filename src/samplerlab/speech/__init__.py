"""Diffusion speech enhancement (SGMSE+, Richter et al. 2023): the audio front end so far."""

from .frontend import (
    SpecConfig,
    compress,
    decompress,
    load_wav,
    normalise_pair,
    pad_to_multiple,
    save_wav,
    spec_to_wav,
    wav_to_spec,
)

__all__ = [
    "SpecConfig",
    "compress",
    "decompress",
    "load_wav",
    "normalise_pair",
    "pad_to_multiple",
    "save_wav",
    "spec_to_wav",
    "wav_to_spec",
]
