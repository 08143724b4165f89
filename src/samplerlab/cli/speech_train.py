"""``samplerlab speech train``: the speech score network (U-Net on [Re, Im] of x and y), resumable."""

from __future__ import annotations

from pathlib import Path

from .common import add_training_run_args, add_unet_args, batch_size, positive_float, positive_int, unet_settings


def add_parser(sub) -> None:
    st = sub.add_parser("train", help="train the speech score network (U-Net on [Re, Im] of x and y); resumable")
    st.add_argument("--corpus", required=True, help="make-corpus folder or VoiceBank-DEMAND root (its train split)")
    st.add_argument(
        "--steps", type=positive_int, default=8000, help="default 8000: about an hour on 2 CPU cores (4000: 28 min)"
    )
    st.add_argument("--batch-size", type=batch_size, default=8)
    st.add_argument("--lr", type=positive_float, default=5e-4)
    st.add_argument("--crop", type=positive_int, default=64, help="frames per training crop (default: 64, about 0.5 s)")
    add_unet_args(st, channels=16, mult=[1, 2, 2, 2], attention=[32])  # sized for CPUs
    add_training_run_args(st, run, out="runs/speech-net", out_help="checkpoint folder (default: runs/speech-net)")


def run(args) -> int:
    from ..distributed import local_device
    from ..speech.data import find_speech_pairs
    from ..speech.network import SpeechCropSource, speech_train_config
    from ..training import train

    source = SpeechCropSource(find_speech_pairs(args.corpus, "train"), args.crop, progress=not args.no_progress)
    config = speech_train_config(
        source,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        **unet_settings(args),
    )
    out = Path(args.out)
    _, meta = train(
        source,
        config,
        out,
        progress=not args.no_progress,
        device=local_device(args.device),
        data_info={"name": "speech", "corpus": str(args.corpus), "crop": args.crop},
    )
    tail = meta["losses"][-100:]
    print(
        f"trained to step {meta['step']}: loss {sum(tail) / len(tail):.4f} (mean of the last {len(tail)}); "
        f"checkpoint in {out} (re-running resumes); enhance with --model {out}"
    )
    return 0
