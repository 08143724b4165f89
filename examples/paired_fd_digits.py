"""Paired FD / KID differences between samplers of a digits model, on the same seeds.

    samplerlab calibrate --checkpoint runs/train-digits --solver dpm-solver++ --nfe 5 --out grids/digits-5.json
    python examples/paired_fd_digits.py --checkpoint runs/train-digits --grid grids/digits-5.json --samples 2000

Samples the calibrated grid, DPM-Solver++ and iPNDM on the model's default grid (Karras's; the flow grid for a
flow-matching model of ``samplerlab train --objective flow``) at the grid file's NFE and Heun at 35 NFE from the
same seeds and classes, and prints each FD with its own 95 % interval, then each sampler's difference to
the calibrated one: FD with a 95 % interval from paired half-samples, KID +- 1.96 paired jackknife
standard errors (``ReferenceStats.frechet_difference_interval``, ``kid_difference``). Two FDs whose own
intervals overlap can still differ significantly: the seeds they share cancel in the difference.
"""

from __future__ import annotations

import argparse

import torch

from samplerlab.data import load_dataset, split_dataset
from samplerlab.experiments.image_eval import (
    ImageEvalConfig,
    default_grid,
    model_process,
    random_labels,
    sample_images,
    sampling_range,
)
from samplerlab.grids import GridFile
from samplerlab.metrics.features import (
    ClassifierFeatures,
    batched_features,
    load_or_train_classifier,
    reference_statistics,
)
from samplerlab.training import load_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a digits model of samplerlab train")
    parser.add_argument("--grid", required=True, help="a DPM-Solver++ grid file of samplerlab calibrate")
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, meta = load_checkpoint(args.checkpoint)
    info = meta["data"]
    train_set, held_out = split_dataset(
        load_dataset(info["name"], **info["params"]), info["held_out"], info["split_seed"]
    )
    extractor = ClassifierFeatures(load_or_train_classifier(train_set.data, train_set.labels))
    ref = reference_statistics(
        extractor, train_set.data, held_out.data, tag="classifier", held_out_labels=held_out.labels
    )
    seeds = list(range(args.samples))
    classes = meta["num_classes"]
    labels = random_labels(seeds, classes) if classes else None
    steps = GridFile.read(args.grid).num_steps  # DPM-Solver++ 2M: one call per step
    grid_name = default_grid(meta)
    sigma_min, sigma_max = sampling_range(meta)
    cells = {
        f"dpm-solver++, calibrated grid, {steps} NFE": ("dpm-solver++", steps, args.grid),
        f"dpm-solver++, {grid_name}, {steps} NFE": ("dpm-solver++", steps, None),
        f"ipndm, {grid_name}, {steps} NFE": ("ipndm", steps, None),
        f"heun, {grid_name}, 35 NFE": ("heun", 18, None),
    }
    features = {}
    for name, (spec, steps, grid) in cells.items():
        x, nfe = sample_images(
            model,
            tuple(meta["shape"]),
            spec,
            steps,
            seeds,
            num_classes=classes,
            labels=labels,
            config=ImageEvalConfig(
                grid=grid,
                grid_name=grid_name,
                process=model_process(meta).name,
                sigma_min=sigma_min,
                sigma_max=sigma_max,
            ),
        )
        features[name] = batched_features(extractor, x.clamp(-1, 1))
        lo, hi = ref.frechet_interval(features[name])
        print(f"{name}: {nfe} NFE, FD {ref.frechet(features[name]):.3f} [{lo:.3f}, {hi:.3f}]", flush=True)
    base = next(iter(cells))
    for name in list(cells)[1:]:
        d, lo, hi = ref.frechet_difference_interval(features[name], features[base])
        k, se = ref.kid_difference(features[name], features[base])
        print(
            f"{name} minus calibrated: FD {d:+.3f} [{lo:+.3f}, {hi:+.3f}], KID x 1e3 {1e3 * k:+.2f} +- {1.96e3 * se:.2f}"
        )


if __name__ == "__main__":
    main()
