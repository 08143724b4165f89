"""``samplerlab likelihood``: NLL through the probability-flow ODE, of an analytic problem or a checkpoint."""

from __future__ import annotations

from .common import nonnegative_int, positive_float, positive_int, sample_count


def add_parser(sub) -> None:
    p = sub.add_parser("likelihood", help="negative log-likelihood through the probability-flow ODE")
    p.add_argument("--problem", default="ring", help="analytic problem (default: ring)")
    p.add_argument("--samples", type=sample_count, default=256)
    p.add_argument("--checkpoint", help="image model from samplerlab train: NLL of held-out images in bits/dim")
    p.add_argument("--data", help="data set for --checkpoint (default: the checkpoint's own, held-out split)")
    p.add_argument("--data-dir", help="folder of a local data set given by --data")
    p.add_argument(
        "--divergence",
        choices=["exact", "hutchinson-rademacher", "hutchinson-gaussian"],
        help="default: exact for analytic problems, hutchinson-rademacher for checkpoints",
    )
    p.add_argument("--probes", type=positive_int, default=1, help="Hutchinson probes per sample")
    p.add_argument("--sigma-max", type=positive_float, default=80.0)
    p.add_argument("--rtol", type=positive_float, default=1e-5)
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..experiments.likelihood import analytic_likelihood, checkpoint_likelihood
    from ..metrics.likelihood import bits_per_dim

    ode = dict(sigma_max=args.sigma_max, probes=args.probes, rtol=args.rtol, atol=args.rtol)
    if not args.checkpoint:
        divergence = args.divergence or "exact"
        r = analytic_likelihood(args.problem, args.samples, seed=args.seed, divergence=divergence, **ode)
        print(f"{r.problem}: {r.samples} exact samples, divergence {divergence}, {r.result.nfe} NFE")
        print(
            f"NLL  {r.result.nll:.4f} ± {r.result.nll_std_error:.4f} nats (standard error over samples); "
            f"closed form {r.exact_nll:.4f}"
        )
        print(f"     {bits_per_dim(r.result.nll, r.dim, eight_bit=False):.4f} bits/dim (continuous data)")
        return 0
    divergence = args.divergence or "hutchinson-rademacher"
    r = checkpoint_likelihood(
        args.checkpoint,
        data=args.data,
        data_dir=args.data_dir,
        samples=args.samples,
        seed=args.seed,
        divergence=divergence,
        **ode,
    )
    res = r.result
    print(
        f"{args.checkpoint}: {r.images} held-out {r.data} images, uniformly dequantised (bin {r.bin_width:.4g}), "
        f"divergence {divergence} x {args.probes}, {res.nfe} NFE, {r.seconds:.0f} s"
    )
    print(f"NLL  {res.nll:.2f} ± {res.nll_std_error:.2f} nats per image (continuous, standard error over images)")
    print(
        f"     {r.bits_per_dim:.4f} ± {r.bits_per_dim_std_error:.4f} bits/dim (discrete upper bound: nll - dim log bin)"
    )
    if res.probe_std_error is not None:
        print(
            f"     Hutchinson estimator's standard error per image (mean): {float(res.probe_std_error.mean()):.2f} nats"
            if args.probes > 1
            else "     (use --probes K > 1 to report the estimator's own standard error)"
        )
    return 0
