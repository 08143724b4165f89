"""Spectrograms of one test recording: noisy, enhanced by the Gaussian-prior model, by a trained network
(optional), and clean. Writes docs/speech-spectrograms.png by default.

    samplerlab speech make-corpus --out data/speech-corpus
    python examples/speech_spectrograms.py --corpus data/speech-corpus [--model runs/speech-net] [--file test_00003]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from samplerlab.io import atomic_path  # noqa: E402
from samplerlab.metrics.speech import speech_metrics  # noqa: E402
from samplerlab.speech.data import find_speech_pairs, load_pair  # noqa: E402
from samplerlab.speech.enhance import enhance, load_enhancement_model  # noqa: E402


def log_power(wav: torch.Tensor, n_fft: int = 510, hop: int = 128) -> torch.Tensor:
    spec = torch.stft(
        wav.double(), n_fft, hop, window=torch.hann_window(n_fft, dtype=torch.float64), return_complex=True
    )
    return 10 * torch.log10(spec.abs() ** 2 + 1e-10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", required=True, help="a samplerlab speech make-corpus folder")
    ap.add_argument("--file", help="test file stem (default: the first)")
    ap.add_argument("--model", help="a samplerlab speech train checkpoint (optional)")
    ap.add_argument("--out", default="docs/speech-spectrograms.png")
    args = ap.parse_args()

    pairs = find_speech_pairs(args.corpus, "test")
    pair = next((p for p in pairs if p.name == args.file), None) if args.file else pairs[0]
    if pair is None:
        raise SystemExit(f"{args.file}: no such test file in {args.corpus}; e.g. {pairs[0].name}")
    clean, noisy = load_pair(pair)
    panels = [("noisy", noisy)]
    models = ["gaussian"] + ([args.model] if args.model else [])
    for name in models:
        m = load_enhancement_model(name)
        wav = enhance(noisy, m.denoiser, pad_multiple=m.pad_multiple, dtype=m.dtype).wav
        panels.append(("Gaussian prior (utterance)" if name == "gaussian" else "trained network", wav))
    panels.append(("clean", clean))

    ref = log_power(clean).max()
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 2.1 * len(panels)), sharex=True)
    seconds = noisy.shape[-1] / 16000
    for ax, (title, wav) in zip(axes, panels):
        if title != "clean":
            m = speech_metrics(clean, wav, ("pesq", "si_sdr"))
            title = f"{title}: PESQ {m['pesq']:.2f}, SI-SDR {m['si_sdr']:.1f} dB"
        ax.imshow(
            (log_power(wav) - ref).numpy(),
            origin="lower",
            aspect="auto",
            vmin=-80,
            vmax=0,
            cmap="magma",
            extent=(0, seconds, 0, 8),
        )
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("kHz")
    axes[-1].set_xlabel("seconds")
    fig.suptitle(f"{pair.name} (SGMSE+ PC sampler, 30 steps)", fontsize=10)
    fig.tight_layout()
    out = Path(args.out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
