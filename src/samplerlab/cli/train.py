"""``samplerlab train``: an EDM or flow-matching model (U-Net on images, MLP on 2-D toys), resumable. Defaults on digits
(U-Net 32 channels, 4000 steps of 128) take about 10 minutes on 2 cores. Launch with torchrun for
DistributedDataParallel."""

from __future__ import annotations

from pathlib import Path

from .common import (
    add_training_run_args,
    add_unet_args,
    batch_size,
    dropout_rate,
    positive_float,
    positive_int,
    sample_count,
    unet_settings,
)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train an EDM or flow-matching model (U-Net on images, MLP on 2-D toys); resumable",
        description=__doc__,
    )
    p.add_argument(
        "--data", default="digits", help="digits (bundled), cifar10, fashion-mnist, image-folder, or a 2-D toy"
    )
    p.add_argument("--data-dir", help="folder of a local data set")
    p.add_argument(
        "--objective",
        default="edm",
        choices=("edm", "flow"),
        help="edm (EDM's preconditioned denoiser, the default) or flow (rectified-flow velocity by conditional flow "
        "matching at logit-normal t, as SD3; sampled under the rectified-flow process)",
    )
    p.add_argument("--samples", type=sample_count, default=20000, help="points drawn for a 2-D toy")
    p.add_argument("--steps", type=positive_int, help="optimiser steps (default: 4000 images, 3000 toys)")
    p.add_argument("--batch-size", type=batch_size, help="global batch (default: 128 images, 256 toys)")
    p.add_argument("--lr", type=positive_float, help="peak learning rate (default: 2e-3)")
    add_unet_args(p, channels=32, mult=[1, 2, 2], attention=[4])
    p.add_argument("--dropout", type=dropout_rate, default=0.1)
    p.add_argument("--hidden", type=positive_int, default=128, help="MLP width (2-D toys)")
    p.add_argument("--depth", type=positive_int, default=3, help="MLP blocks (2-D toys)")
    p.add_argument(
        "--no-sample-grids",
        dest="sample_every_checkpoint",
        action="store_false",
        help="do not write a sample grid PNG at each checkpoint",
    )
    add_training_run_args(p, run, out=None, out_help="checkpoint folder (default: runs/train-DATA)")


def run(args) -> int:
    from ..data import training_data
    from ..distributed import init_from_env, local_device, rank
    from ..experiments.image_eval import checkpoint_sample_grid
    from ..training import TrainConfig, train
    from ..training.loss import OBJECTIVES

    init_from_env()
    data, info = training_data(args.data, args.data_dir, args.samples, args.seed)
    images = data.data.ndim == 4
    config = TrainConfig.for_data(
        images,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        objective=args.objective,
        sigma_data=round(float(data.data.std()), 4),
        hidden=args.hidden,
        depth=args.depth,
        dropout=args.dropout,
        checkpoint_every=args.checkpoint_every,
        **unet_settings(args),
    )
    out = Path(args.out or f"runs/train-{args.data}")
    on_checkpoint = None
    if images and args.sample_every_checkpoint:
        process = OBJECTIVES.get(config.objective).process.name
        on_checkpoint = checkpoint_sample_grid(data.data.shape[1:], data.num_classes, out / "samples", process)
    _, meta = train(
        data.data,
        config,
        out,
        labels=data.labels,
        progress=not args.no_progress,
        on_checkpoint=on_checkpoint,
        device=local_device(args.device),
        data_info=info,
    )
    if rank() == 0:
        tail = meta["losses"][-100:]
        print(
            f"trained to step {meta['step']}: loss {sum(tail) / len(tail):.4f} (mean of the last {len(tail)}); "
            f"checkpoint in {out} (safetensors + JSON; re-running resumes), log in {out / 'log.jsonl'}"
        )
    return 0
