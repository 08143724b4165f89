"""Real-time factor of speech enhancement (``speech.enhance``) against the bare model calls it makes.

For the utterance Gaussian prior and for the speech score network at ``samplerlab speech train``'s
default size (untrained weights: speed does not depend on them), prints seconds per second of audio for:
  baseline     the same number of model calls (NFE) on the same input, nothing else
  samplerlab   enhance(): peak normalisation, STFT and compression, the PC sampler, inverse STFT
and the share of enhance()'s time spent outside the model.
"""

from __future__ import annotations

import argparse
import math

import torch

from samplerlab.denoisers import EDMPrecond
from samplerlab.nets.unet import UNetConfig
from samplerlab.processes import OUVE
from samplerlab.speech.enhance import enhance
from samplerlab.speech.frontend import SpecConfig, pad_to_multiple, wav_to_spec
from samplerlab.speech.gaussian import GaussianSpeechPrior, complex_to_channels
from samplerlab.speech.network import SpeechScoreNet
from timing import best_of  # benchmarks/timing.py


def test_signal(seconds: float, rate: int = 16000) -> torch.Tensor:
    """A gated harmonic tone in white noise: speech-like on and off patterns, no files needed."""
    g = torch.Generator().manual_seed(0)
    t = torch.arange(int(seconds * rate), dtype=torch.float64) / rate
    voiced = sum(torch.sin(2 * math.pi * 150 * k * t) / k for k in range(1, 6)) * (torch.sin(2 * math.pi * 1.3 * t) > 0)
    return (0.3 * voiced + 0.05 * torch.randn(t.shape, generator=g, dtype=torch.float64)).float()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=4.0, help="audio length (default: 4 s)")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    noisy = test_signal(args.seconds)
    net = SpeechScoreNet(
        256, UNetConfig(channels=16, channel_mult=(1, 2, 2, 2), num_blocks=1, attention_resolutions=(32,))
    ).eval()
    models = {
        "gaussian (utterance)": (GaussianSpeechPrior(mode="utterance"), 1, torch.float64),
        "network (16 ch)": (EDMPrecond(net, 0.054), net.down_factor, torch.float32),
    }
    process = OUVE()
    print(f"{args.seconds:.1f} s of audio, {args.steps} steps of SGMSE+'s PC sampler, {args.threads} thread(s)")
    print(f"{'model':22s} {'NFE':>4s} {'baseline RTF':>13s} {'enhance RTF':>12s} {'outside model':>14s}")
    for name, (model, pad, dtype) in models.items():
        wav = pad_to_multiple(noisy.double() / noisy.abs().max(), pad)
        y = complex_to_channels(wav_to_spec(wav, SpecConfig())).unsqueeze(0).to(dtype)
        u = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
        result = enhance(noisy, model, steps=args.steps, pad_multiple=pad, dtype=dtype)
        sigma = float(process.sigma(0.5))

        def bare_calls():
            with torch.no_grad():
                for _ in range(result.nfe):
                    model(u, sigma, y=y)

        def full():
            with torch.no_grad():
                enhance(noisy, model, steps=args.steps, pad_multiple=pad, dtype=dtype)

        base = best_of(bare_calls, args.repeats) / args.seconds
        lab = best_of(full, args.repeats) / args.seconds
        print(f"{name:22s} {result.nfe:4d} {base:13.3f} {lab:12.3f} {max(0.0, 1 - base / lab):13.0%}")


if __name__ == "__main__":
    main()
