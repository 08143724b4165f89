"""Inpainting with a trained digits model: the bottom half of held-out digits is unknown and the
model completes it (replacement method, Song et al. 2021, App. I.2, with the ``Inpaint`` hook).

    samplerlab train --data digits --out runs/train-digits
    python examples/inpaint_digits.py --checkpoint runs/train-digits --out docs/inpainting.png

The PNG has one column per held-out digit: the original, the known top half, then completions from
three seeds. The script also reports how often samplerlab's digits classifier reads the completed
digit as the original's class, against the same images with the bottom half left blank.
"""

from __future__ import annotations

import argparse

import torch

from samplerlab.conditioning import Inpaint
from samplerlab.data import load_digits, split_dataset
from samplerlab.grids import karras
from samplerlab.imaging import save_image_grid
from samplerlab.metrics.features import ClassifierFeatures, load_or_train_classifier
from samplerlab.noise import SampleNoise
from samplerlab.processes import EDM
from samplerlab.sampling import prior_sample, sample
from samplerlab.solvers import solver_from_spec
from samplerlab.training import load_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="runs/train-digits")
    parser.add_argument("--out", default="docs/inpainting.png")
    parser.add_argument(
        "--solver", default="ddim:eta=1", help="stochastic solvers suit replacement (default: ddim:eta=1)"
    )
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--columns", type=int, default=12, help="digits shown")
    parser.add_argument("--evaluate", type=int, default=300, help="held-out digits for the class agreement figure")
    args = parser.parse_args()
    torch.set_num_threads(1)

    model, meta = load_checkpoint(args.checkpoint)
    info = meta["data"]
    train_set, held = split_dataset(load_digits(), info["held_out"], info["split_seed"])
    n = max(args.columns, args.evaluate)
    known, labels = held.data[:n], held.labels[:n]
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :4, :] = 1.0  # top half known

    process = EDM()
    grid = karras(args.steps, process)
    solver = solver_from_spec(args.solver)
    completions = []
    for repeat in range(3):
        seeds = [10_000 * repeat + i for i in range(n)]
        noise = SampleNoise(seeds)
        x = prior_sample(process, float(grid[0]), noise, (1, 8, 8))
        with torch.no_grad():  # unconditional model: no class label
            out = sample(model, x, grid, solver, process=process, noise=noise, hooks=[Inpaint(known, mask)])
        completions.append(out.x.clamp(-1, 1))

    classifier = ClassifierFeatures(load_or_train_classifier(train_set.data, train_set.labels))
    blank = mask * known + (1 - mask) * -1.0
    agree = [float((classifier.predict(c) == labels).double().mean()) for c in completions]
    print(
        f"classifier agrees with the original class: completed {sum(agree) / 3:.3f} "
        f"(seeds: {', '.join(f'{a:.3f}' for a in agree)}); bottom half blank {float((classifier.predict(blank) == labels).double().mean()):.3f}; "
        f"originals {float((classifier.predict(known) == labels).double().mean()):.3f} ({n} held-out digits)"
    )

    c = args.columns
    masked_view = mask * known[:c] + (1 - mask) * 0.0  # unknown half shown grey
    rows = [known[:c], masked_view] + [x[:c] for x in completions]
    path = save_image_grid(torch.cat(rows), args.out, nrow=c, scale=4)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
