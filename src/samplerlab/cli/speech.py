"""``samplerlab speech make-corpus | fit-gaussian | train | eval``: the speech-enhancement track
(train and eval in their own modules)."""

from __future__ import annotations

import time
from pathlib import Path

from . import speech_eval, speech_train
from .common import add_no_progress, csv_list, finite_float, nonnegative_int, output_dir


def add_parser(sub) -> None:
    speech = sub.add_parser("speech", help="speech enhancement: corpus, Gaussian prior, metrics")
    s = speech.add_subparsers(dest="speech_command", required=True)
    mc = s.add_parser("make-corpus", help="synthetic noisy speech (espeak-ng voices + noise), resumable")
    mc.add_argument("--out", type=output_dir, default="data/speech-corpus")
    mc.add_argument("--train", type=nonnegative_int, default=200)
    mc.add_argument("--valid", type=nonnegative_int, default=20)
    mc.add_argument("--test", type=nonnegative_int, default=30)
    mc.add_argument("--seed", type=nonnegative_int, default=0)
    mc.add_argument("--snr-min", type=finite_float, default=0.0)
    mc.add_argument("--snr-max", type=finite_float, default=20.0)
    mc.add_argument("--noise", help="comma-separated noise types (default: white,pink,brown,babble)")
    add_no_progress(mc)
    mc.set_defaults(func=make_corpus)
    fg = s.add_parser("fit-gaussian", help="fit the Gaussian-prior model on a corpus's train split")
    fg.add_argument("--corpus", required=True, help="make-corpus folder or VoiceBank-DEMAND root")
    fg.add_argument("--out", help="default: CORPUS/gaussian_prior.npz")
    add_no_progress(fg)
    fg.set_defaults(func=fit_gaussian)
    speech_train.add_parser(s)
    speech_eval.add_parser(s)


def make_corpus(args) -> int:
    from ..speech.corpus import CorpusConfig, make_corpus

    sizes = {k: getattr(args, k) for k in ("train", "valid", "test", "seed", "snr_min", "snr_max")}
    noise = tuple(csv_list(args.noise)) if args.noise else CorpusConfig().noise_types
    config = CorpusConfig(**sizes, noise_types=noise)
    start = time.perf_counter()
    out = make_corpus(args.out, config, progress=not args.no_progress)
    print(
        f"corpus in {out} ({config.train} train, {config.valid} valid, {config.test} test utterances; "
        f"{time.perf_counter() - start:.0f} s); manifest.json lists voice, speed, pitch, noise and SNR per file"
    )
    return 0


def fit_gaussian(args) -> int:
    from ..speech.data import find_speech_pairs
    from ..speech.gaussian import PRIOR_FILE, fit_gaussian_prior

    prior = fit_gaussian_prior(find_speech_pairs(args.corpus, "train"), progress=not args.no_progress)
    path = prior.save(args.out or Path(args.corpus) / PRIOR_FILE)
    print(
        f"Gaussian prior from {prior.files} training files ({prior.frames} frames): mean Wiener gain "
        f"{float(prior.gain.mean()):.3f}; wrote {path}"
    )
    return 0
