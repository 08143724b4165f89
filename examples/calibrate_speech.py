"""Calibrate a few-step sampler's grid for a speech enhancement model (samplerlab.calibration) on crops of
the corpus's valid split; the grid file then goes to examples/speech_few_step.py --grids.

    python examples/calibrate_speech.py --corpus data/speech-corpus --model runs/speech-net \
        --solver dpm-solver++ --nfe 10 --out grids/speech-dpmpp-10.json

The target is the conditional OUVE probability-flow ODE of the model: one sample is a crop of --frames STFT
frames of a valid-split recording (peak-normalised as enhancement does), its conditioning y the noisy crop,
its prior draw from the seed. Fit, validation and test seeds are disjoint; the report compares the
calibrated grid with the best built-in grid for the solver (RMS to a tight dopri5 teacher).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from samplerlab.calibration import SeedSplit, Target, calibrate
from samplerlab.processes import OUVE
from samplerlab.speech.data import find_speech_pairs, load_pair
from samplerlab.speech.enhance import load_enhancement_model
from samplerlab.speech.frontend import wav_to_spec
from samplerlab.speech.gaussian import complex_to_channels


def crops(corpus: str, split: str, model, frames: int) -> list[torch.Tensor]:
    """Non-overlapping crops of every recording's compressed noisy spectrogram, [Re, Im] channels."""
    out = []
    for pair in find_speech_pairs(corpus, split):
        _, noisy = load_pair(pair, model.spec.sample_rate)
        y = complex_to_channels(wav_to_spec(noisy.double() / float(noisy.abs().max()), model.spec))
        for start in range(0, y.shape[-1] - frames + 1, frames):
            out.append(y[..., start : start + frames].to(model.dtype))
    if not out:
        raise ValueError(f"no recording of {corpus}/{split} has {frames} frames")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--model", required=True, help="a samplerlab speech train folder or an SGMSE+ .ckpt")
    parser.add_argument("--solver", default="dpm-solver++")
    parser.add_argument("--nfe", type=int, default=10)
    parser.add_argument("--method", default="grid+shift")
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--samples", type=int, default=48, help="fit and validation crops each (test: twice)")
    parser.add_argument("--max-evaluations", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_enhancement_model(args.model)
    process = model.process or OUVE()
    bank = crops(args.corpus, "valid", model, args.frames)

    def cond(seeds):
        return {"y": torch.stack([bank[s % len(bank)] for s in seeds])}

    target = Target(model.denoiser, process, tuple(bank[0].shape), dtype=model.dtype, cond=cond)
    n = args.samples
    seeds = SeedSplit(range(0, n), range(10**5, 10**5 + n), range(2 * 10**5, 2 * 10**5 + 2 * n))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    grid_file, report = calibrate(
        target,
        args.solver,
        args.nfe,
        method=args.method,
        seeds=seeds,
        max_evaluations=args.max_evaluations,
        state_path=out.with_name(f".{out.name}.state"),
        progress=True,
    )
    grid_file.write(out)
    print("\n".join(report.lines()))
    print("sigmas: " + ", ".join(f"{s:.4g}" for s in grid_file.sigmas))
    print(f"{report.evaluations} sampler runs, {report.seconds:.0f} s; wrote {out}")


if __name__ == "__main__":
    main()
