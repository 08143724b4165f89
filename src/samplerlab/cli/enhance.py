"""``samplerlab enhance``: enhance noisy speech (a .wav or a folder) with any solver."""

from __future__ import annotations

import json
from pathlib import Path

from .common import add_no_progress, nonnegative_int, output_dir, positive_float, positive_int


def add_parser(sub) -> None:
    from ..speech.gaussian import PRIORS

    p = sub.add_parser("enhance", help="enhance noisy speech (a .wav or a folder) with any solver")
    p.add_argument("input", help="noisy .wav file or folder")
    p.add_argument(
        "--model",
        default="gaussian",
        help="gaussian (the exact Gaussian-prior model), a checkpoint folder from samplerlab speech train, or a "
        "published SGMSE+ checkpoint (FILE.ckpt, read without executing it; docs/sgmse.md)",
    )
    p.add_argument(
        "--corpus", help="corpus whose train split fits the stationary / adaptive Gaussian prior (cached in it)"
    )
    p.add_argument("--prior", help="a Gaussian prior file from `samplerlab speech fit-gaussian`")
    p.add_argument(
        "--prior-mode",
        default="utterance",
        choices=list(PRIORS),
        help="utterance (default: noise and speech variances from the recording itself), adaptive "
        "(noise variance from the training split), stationary (both from the training split)",
    )
    p.add_argument(
        "--solver",
        default="pc",
        help="solver spec; pc (default) is SGMSE+'s: reverse-diffusion predictor + annealed-Langevin "
        "corrector, snr 0.5 (spell out pc:... for other predictors / correctors); sgmse-literal runs SGMSE+'s "
        "own sampler step for step on an SGMSE+ checkpoint",
    )
    p.add_argument("--steps", type=positive_int, default=30)
    p.add_argument(
        "--grid",
        default="uniform-time",
        help="uniform-time (default, SGMSE+'s), karras, logsnr, ... on the process's sigma range, or a grid file",
    )
    p.add_argument("--snr", type=positive_float, help="corrector snr of a pc solver (SGMSE+: 0.5)")
    p.add_argument(
        "--no-final-denoise",
        action="store_true",
        help="stop at t_eps with its noise instead of the final denoising step SGMSE+ returns",
    )
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.add_argument("--out", type=output_dir, default="enhanced")
    add_no_progress(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..io import atomic_write_text
    from ..speech.enhance import LITERAL, enhance_files, enhancement_solver, load_enhancement_model

    model = load_enhancement_model(args.model, corpus=args.corpus, prior_file=args.prior, prior_mode=args.prior_mode)
    solver = LITERAL if args.solver == LITERAL else enhancement_solver(args.solver, args.snr)
    if solver == LITERAL and not str(args.model).endswith(".ckpt"):
        raise ValueError(f"--solver {LITERAL} runs SGMSE+ checkpoints (--model FILE.ckpt), not {args.model!r}")
    if solver == LITERAL and args.grid != "uniform-time":
        raise ValueError(
            f"--solver {LITERAL} runs SGMSE+'s own sampler on its own grid; --grid {args.grid} is not used"
        )
    out = Path(args.out)
    r = enhance_files(
        args.input,
        out,
        model,
        solver,
        steps=args.steps,
        seed=args.seed,
        final_denoise=not args.no_final_denoise,
        progress=not args.no_progress,
        literal_snr=0.5 if args.snr is None else args.snr,
        grid=args.grid,
    )
    print(
        f"enhanced {r.files} file(s) into {out} with {model.label}, "
        f"{solver if isinstance(solver, str) else solver.describe()}, "
        f"{args.steps} steps{'' if solver == LITERAL else f' on the {args.grid} grid'} ({r.nfe} NFE per file); "
        f"real-time factor {r.real_time_factor:.3f} "
        f"({r.seconds:.1f} s for {r.audio_seconds:.1f} s of audio)"
    )
    atomic_write_text(
        out / "enhance.json",
        json.dumps(
            {
                "solver": args.solver,
                "steps": args.steps,
                "grid": args.grid,
                "snr": args.snr,
                "model": args.model,
                "prior": args.prior_mode,
                "seed": args.seed,
                "final_denoise": not args.no_final_denoise,
                "files": r.files,
                "rtf": r.real_time_factor,
            }
        )
        + "\n",
    )
    return 0
