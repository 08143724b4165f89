"""``samplerlab eval``: Fréchet distance, precision / recall and class accuracy per solver x NFE."""

from __future__ import annotations

from .common import (
    CHECKPOINT_HELP,
    add_no_progress,
    add_published_config_arg,
    csv_list,
    float_list,
    int_list,
    nonnegative_int,
    output_dir,
    sample_count,
)


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="Fréchet distance, precision / recall and class accuracy per solver x NFE")
    p.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    add_published_config_arg(p)
    p.add_argument(
        "--data",
        help="published checkpoints: the data set it was trained on (cifar10, image-folder, fashion-mnist, digits), "
        "split as samplerlab train splits it",
    )
    p.add_argument("--data-dir", help="with --data: the folder of the local data set")
    p.add_argument(
        "--solvers",
        help="comma-separated solver specs (default: euler,heun,dpm-solver++,unipc:order=3,ipndm,deis-tab:order=3)",
    )
    p.add_argument("--nfe", type=int_list, help="NFE budgets (default: 5,10,20,35)")
    p.add_argument("--cfg", type=float_list, help="guidance scales (default: 1)")
    p.add_argument(
        "--grid",
        help="a grid name or spec (logsnr, flow:shift=3, ...) or a grid file of samplerlab calibrate "
        "(default: the model's, karras; flow for a flow-matching model)",
    )
    p.add_argument("--samples", type=sample_count, help="samples per cell (default: as many as held-out images)")
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.add_argument(
        "--features",
        help="TorchScript feature extractor (images in [-1, 1] -> (B, d)); default: "
        "a classifier samplerlab trains on the data's training split",
    )
    p.add_argument(
        "--cache",
        help="cache folder for the classifier and reference statistics "
        "(default: $SAMPLERLAB_CACHE or ~/.cache/samplerlab)",
    )
    p.add_argument("--out", type=output_dir, help="folder for table.md and results.json")
    add_no_progress(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..distributed import init_from_env, rank
    from ..experiments.image_eval import evaluate_checkpoint, format_image_eval, write_image_eval

    init_from_env()
    rows, ref, config = evaluate_checkpoint(
        args.checkpoint,
        solvers=csv_list(args.solvers) if args.solvers else None,
        nfes=args.nfe,
        guidance=args.cfg,
        samples=args.samples,
        seed=args.seed,
        features=args.features,
        cache=args.cache,
        progress=not args.no_progress,
        grid=args.grid,
        model_config=args.config,
        data=args.data,
        data_dir=args.data_dir,
    )
    if rank() != 0:
        return 0
    table = format_image_eval(rows, ref)
    print(table)
    if args.out:
        paths = write_image_eval(args.out, args.checkpoint, rows, ref, config, table)
        print(f"wrote {paths[0]} and {paths[1]}")
    return 0
