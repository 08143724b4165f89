"""The training split of a named data set or 2-D toy, with the facts a checkpoint keeps to find its
held-out split again (``samplerlab eval`` and ``likelihood`` score on it)."""

from __future__ import annotations

from .loaders import DATASETS, Dataset, load_dataset, split_dataset
from .toys import TOYS, make_toy

__all__ = ["HELD_OUT", "training_data"]

HELD_OUT = 0.2  # share of an image data set kept from training, split with seed 0


def training_data(name: str, data_dir: str | None = None, samples: int = 20000, seed: int = 0) -> tuple[Dataset, dict]:
    """(train Dataset, info for the checkpoint) of a toy (``samples`` points) or an image data set."""
    if name in TOYS:
        return Dataset(make_toy(name, samples, seed=seed), None, name=name), {"name": name, "samples": samples}
    if name not in DATASETS:
        raise ValueError(f"unknown data {name!r}; valid: {', '.join(TOYS.names() + DATASETS.names())}")
    params = {} if name == "digits" else {"root": data_dir}
    if name != "digits" and not data_dir:
        raise ValueError(f"--data {name} reads local files: give --data-dir")
    info = {"name": name, "params": params, "held_out": HELD_OUT, "split_seed": 0}
    train_set, _ = split_dataset(load_dataset(name, **params), info["held_out"], info["split_seed"])
    return train_set, info
