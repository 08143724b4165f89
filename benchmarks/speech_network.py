"""Speed of one call of the speech score network (``samplerlab speech train``'s U-Net) on a 4 s spectrogram,
in the memory layout it is loaded with (channels-last, ``speech.enhance.load_enhancement_model``) against
the plain contiguous layout, in the same run, and the largest difference between their outputs.

    python benchmarks/speech_network.py [--model runs/speech-net] [--threads 2]

Without ``--model`` a freshly initialised network of the default configuration is timed (the layout's
speed does not depend on the weights).
"""

from __future__ import annotations

import argparse

import torch

from samplerlab.speech.enhance import load_enhancement_model
from timing import best_of  # benchmarks/timing.py


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="a speech checkpoint folder (default: an untrained network)")
    ap.add_argument("--frames", type=int, default=480, help="STFT frames (480: about 3.8 s at 16 kHz)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.model:
        model = load_enhancement_model(args.model)
        denoiser = model.denoiser
    else:
        from samplerlab.speech.network import build_speech_unet
        from samplerlab.training import TrainConfig
        from samplerlab.training.edm import EDMPrecond

        # samplerlab speech train's network, random weights (zero-initialised layers would be untypical)
        config = TrainConfig(net="speech-unet", channels=16, channel_mult=(1, 2, 2, 2), attention_resolutions=(32,))
        net = build_speech_unet((2, 256, 64), 0, config).eval()
        with torch.no_grad():
            for p in net.parameters():
                p.normal_(0, 0.05)
        net.to(memory_format=torch.channels_last)  # as load_enhancement_model does
        denoiser = EDMPrecond(net, 0.05)
    x, y = torch.randn(2, 1, 2, 256, args.frames).unbind(0)
    sigma = torch.full((1,), 0.3)

    def call():
        with torch.no_grad():
            return denoiser(x, sigma, y=y)

    fast_out = call()
    fast = best_of(call, args.repeats)
    denoiser.net.to(memory_format=torch.contiguous_format)
    plain_out = call()
    plain = best_of(call, args.repeats)
    print(f"speech network, 1 x 2 x 256 x {args.frames}, {args.threads} threads, best of {args.repeats}")
    print(f"  contiguous (NCHW)   {1e3 * plain:8.1f} ms per call")
    print(f"  channels-last       {1e3 * fast:8.1f} ms per call   ({plain / fast:.2f}x)")
    print(f"  largest output difference {float((fast_out - plain_out).abs().max()):.1e}")


if __name__ == "__main__":
    main()
