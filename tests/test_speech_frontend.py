import math

import numpy as np
import pytest
import torch

from samplerlab.speech import (
    compress,
    decompress,
    load_wav,
    normalise_pair,
    pad_to_multiple,
    save_wav,
    spec_to_wav,
    wav_to_spec,
)


def test_stft_shape_and_round_trip():
    wav = torch.randn(2, 16000, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.1
    spec = wav_to_spec(wav)
    assert spec.shape == (2, 256, 16000 // 128 + 1) and spec.is_complex()
    back = spec_to_wav(spec, 16000)
    assert torch.allclose(back, wav, atol=1e-10)


def test_compression_is_exactly_invertible_and_compresses():
    c = torch.randn(100, dtype=torch.complex128) * 3
    assert torch.allclose(decompress(compress(c)), c, atol=1e-12)
    assert torch.allclose(compress(c).abs(), 0.15 * c.abs() ** 0.5)
    assert torch.allclose(compress(c).angle(), c.angle())


def test_normalise_and_pad():
    clean, noisy = torch.tensor([0.1, -0.2]), torch.tensor([0.5, -2.0])
    x, y, peak = normalise_pair(clean, noisy)
    assert peak == 2.0 and float(y.abs().max()) == 1.0 and torch.allclose(x, clean / 2)
    with pytest.raises(ValueError, match="silent"):
        normalise_pair(clean, torch.zeros(2))
    padded = pad_to_multiple(torch.zeros(16000), 64)
    assert wav_to_spec(padded).shape[-1] % 64 == 0


def test_wav_files_round_trip_and_resample(tmp_path):
    t = torch.arange(48000, dtype=torch.float64) / 48000
    tone = 0.5 * torch.sin(2 * math.pi * 440 * t)
    import soundfile as sf

    sf.write(str(tmp_path / "tone48k.wav"), tone.numpy(), 48000, subtype="PCM_16")
    wav = load_wav(tmp_path / "tone48k.wav", 16000)
    assert abs(len(wav) - 16000) <= 1
    spectrum = np.abs(np.fft.rfft(wav.numpy()))
    assert abs(np.argmax(spectrum) * 16000 / len(wav) - 440) < 2
    save_wav(tmp_path / "out.wav", wav)
    again = load_wav(tmp_path / "out.wav")
    assert torch.allclose(again, wav, atol=1 / 32767 + 1e-6)
    (tmp_path / "bad.wav").write_bytes(b"RIFF....WAVEnope")
    with pytest.raises(ValueError, match="bad.wav: not a readable audio file"):
        load_wav(tmp_path / "bad.wav")
    with pytest.raises(ValueError, match="no such file"):
        load_wav(tmp_path / "missing.wav")
