"""``samplerlab speech make-corpus | fit-gaussian | train | eval``: the speech-enhancement track."""

from __future__ import annotations

import json
import time
from pathlib import Path

from .common import add_device_arg, add_no_progress, add_unet_args, csv_list, unet_settings


def add_parser(sub) -> None:
    speech = sub.add_parser("speech", help="speech enhancement: corpus, Gaussian prior, metrics")
    s = speech.add_subparsers(dest="speech_command", required=True)
    mc = s.add_parser("make-corpus", help="synthetic noisy speech (espeak-ng voices + noise), resumable")
    mc.add_argument("--out", default="data/speech-corpus")
    mc.add_argument("--train", type=int, default=200)
    mc.add_argument("--valid", type=int, default=20)
    mc.add_argument("--test", type=int, default=30)
    mc.add_argument("--seed", type=int, default=0)
    mc.add_argument("--snr-min", type=float, default=0.0)
    mc.add_argument("--snr-max", type=float, default=20.0)
    mc.add_argument("--noise", help="comma-separated noise types (default: white,pink,brown,babble)")
    add_no_progress(mc)
    mc.set_defaults(func=make_corpus)
    fg = s.add_parser("fit-gaussian", help="fit the Gaussian-prior model on a corpus's train split")
    fg.add_argument("--corpus", required=True, help="make-corpus folder or VoiceBank-DEMAND root")
    fg.add_argument("--out", help="default: CORPUS/gaussian_prior.npz")
    add_no_progress(fg)
    fg.set_defaults(func=fit_gaussian)
    st = s.add_parser("train", help="train the speech score network (U-Net on [Re, Im] of x and y); resumable")
    st.add_argument("--corpus", required=True, help="make-corpus folder or VoiceBank-DEMAND root (its train split)")
    st.add_argument("--steps", type=int, default=8000, help="default 8000: about an hour on 2 CPU cores (4000: 28 min)")
    st.add_argument("--batch-size", type=int, default=8)
    st.add_argument("--lr", type=float, default=5e-4)
    st.add_argument("--crop", type=int, default=64, help="frames per training crop (default: 64, about 0.5 s)")
    add_unet_args(st, channels=16, mult=[1, 2, 2, 2], attention=[32])  # sized for CPUs
    st.add_argument("--checkpoint-every", type=int, default=500)
    add_device_arg(st)
    st.add_argument("--seed", type=int, default=0)
    st.add_argument("--out", default="runs/speech-net")
    add_no_progress(st)
    st.set_defaults(func=train, foreground=True)
    se = s.add_parser("eval", help="PESQ, STOI, ESTOI, SI-SDR against clean references: mean ± std")
    se.add_argument("--clean", required=True, help="folder of clean references (matched by file name)")
    se.add_argument("--enhanced", help="folder of enhanced files")
    se.add_argument("--noisy", help="folder of noisy inputs (the baseline)")
    se.add_argument("--metrics", help="comma-separated subset of pesq,stoi,estoi,si_sdr,warpq,dnsmos_sig,dnsmos_bak,"
                                      "dnsmos_ovrl,dnsmos_p808 (default: all that run here)")
    se.add_argument("--dnsmos", metavar="DIR", help="folder with the DNSMOS P.835 model (sig_bak_ovr.onnx; optional "
                                                    "calibration.json, and model_v8.onnx for P.808) for the dnsmos_* "
                                                    "scores; none is downloaded")
    se.add_argument("--out", help="JSON file for the figures")
    add_no_progress(se)
    se.set_defaults(func=evaluate)


def make_corpus(args) -> int:
    from ..speech.corpus import CorpusConfig, make_corpus

    config = CorpusConfig(train=args.train, valid=args.valid, test=args.test, seed=args.seed,
                          snr_min=args.snr_min, snr_max=args.snr_max,
                          noise_types=tuple(csv_list(args.noise)) if args.noise else CorpusConfig().noise_types)
    start = time.perf_counter()
    out = make_corpus(args.out, config, progress=not args.no_progress)
    print(f"corpus in {out} ({config.train} train, {config.valid} valid, {config.test} test utterances; "
          f"{time.perf_counter() - start:.0f} s); manifest.json lists voice, speed, pitch, noise and SNR per file")
    return 0


def fit_gaussian(args) -> int:
    from ..speech.data import find_speech_pairs
    from ..speech.gaussian import PRIOR_FILE, fit_gaussian_prior

    prior = fit_gaussian_prior(find_speech_pairs(args.corpus, "train"), progress=not args.no_progress)
    path = prior.save(args.out or Path(args.corpus) / PRIOR_FILE)
    print(f"Gaussian prior from {prior.files} training files ({prior.frames} frames): mean Wiener gain "
          f"{float(prior.gain.mean()):.3f}; wrote {path}")
    return 0


def train(args) -> int:
    from ..distributed import local_device
    from ..speech.data import find_speech_pairs
    from ..speech.network import SpeechCropSource, speech_train_config
    from ..training import train

    source = SpeechCropSource(find_speech_pairs(args.corpus, "train"), args.crop, progress=not args.no_progress)
    config = speech_train_config(source, steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                                 checkpoint_every=args.checkpoint_every, **unet_settings(args))
    out = Path(args.out)
    _, meta = train(source, config, out, progress=not args.no_progress, device=local_device(args.device),
                    data_info={"name": "speech", "corpus": str(args.corpus), "crop": args.crop})
    tail = meta["losses"][-100:]
    print(f"trained to step {meta['step']}: loss {sum(tail) / len(tail):.4f} (mean of the last {len(tail)}); "
          f"checkpoint in {out} (re-running resumes); enhance with --model {out}")
    return 0


def evaluate(args) -> int:
    from ..io import atomic_write_text
    from ..metrics.speech import available_metrics
    from ..speech.scoring import format_scores, score_folders, scores_to_json

    dnsmos = None
    if args.dnsmos:
        from ..metrics.dnsmos import DNSMOS

        dnsmos = DNSMOS(args.dnsmos)
    which = csv_list(args.metrics) if args.metrics else list(available_metrics(dnsmos))
    if not args.metrics:
        if "warpq" not in which:
            print("WARP-Q skipped: it is an optional extra (pip install 'samplerlab[warpq]')")
        if dnsmos is None:
            print("DNSMOS skipped: pass --dnsmos DIR, a folder with the DNSMOS P.835 model (sig_bak_ovr.onnx)")
    if dnsmos is not None and dnsmos.calibration is None:
        print(f"DNSMOS: no calibration.json in {args.dnsmos}; the scores are the network's raw outputs")
    rows = score_folders(args.clean, {"noisy": args.noisy, "enhanced": args.enhanced}, which, dnsmos=dnsmos,
                         progress=not args.no_progress)
    if not rows:
        raise ValueError("give --enhanced DIR and / or --noisy DIR to compare with --clean DIR")
    print(format_scores(rows, which))
    if args.out:
        atomic_write_text(Path(args.out), json.dumps(scores_to_json(rows), indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0
