"""Negative log-likelihoods through the probability-flow ODE (``metrics.likelihood``) of the things a
user has: an analytic problem (checked against its closed form) or a trained image checkpoint, scored
on held-out images uniformly dequantised, in nats and bits/dim."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from ..metrics.likelihood import LikelihoodResult, bits_per_dim, ode_log_likelihood, uniform_dequantise

__all__ = ["AnalyticLikelihood", "ImageLikelihood", "analytic_likelihood", "checkpoint_likelihood"]


@dataclass
class AnalyticLikelihood:
    problem: str
    samples: int
    dim: int
    result: LikelihoodResult
    exact_nll: float  # the closed form on the same samples


@dataclass
class ImageLikelihood:
    data: str
    images: int
    dim: int
    bin_width: float
    result: LikelihoodResult
    bits_per_dim: float
    bits_per_dim_std_error: float
    seconds: float


def analytic_likelihood(
    problem_name: str, samples: int, *, seed: int = 0, divergence: str = "exact", **ode
) -> AnalyticLikelihood:
    """The ODE NLL of ``samples`` exact samples of an analytic problem, beside its closed form."""
    from ..problems import make_problem

    problem = make_problem(problem_name)
    x = problem.model.sample(samples, torch.Generator().manual_seed(seed))
    result = ode_log_likelihood(problem.model, x, divergence=divergence, seed=seed, **ode)
    return AnalyticLikelihood(problem.name, samples, problem.dim, result, -problem.model.log_prob(x).mean().item())


def checkpoint_likelihood(
    checkpoint,
    *,
    data: str | None = None,
    data_dir: str | None = None,
    samples: int = 256,
    seed: int = 0,
    divergence: str = "hutchinson-rademacher",
    **ode,
) -> ImageLikelihood:
    """Held-out images of the checkpoint's data (its own held-out split, or the data set ``data``)."""
    from ..data import load_dataset, split_dataset
    from ..training import load_checkpoint

    model, meta = load_checkpoint(checkpoint)
    model.net.double()  # the ODE and its divergence run in float64
    info = meta.get("data") or {}
    name = data or info.get("name")
    if len(meta.get("shape", ())) != 3 or not name:
        raise ValueError(f"{checkpoint}: likelihood --checkpoint needs an image model (or give --data)")
    params = info.get("params", {}) if name == info.get("name") else ({"root": data_dir} if data_dir else {})
    dataset = load_dataset(name, **params)
    if name == info.get("name"):
        _, dataset = split_dataset(dataset, info["held_out"], info["split_seed"])  # images the model never saw
    if tuple(dataset.data.shape[1:]) != tuple(meta["shape"]):
        raise ValueError(f"{name} images have shape {tuple(dataset.data.shape[1:])}, the model {tuple(meta['shape'])}")
    values = dataset.integer_values()[:samples]
    levels = int(round(2 / dataset.bin_width)) + 1
    x = uniform_dequantise(
        values, torch.Generator().manual_seed(seed), levels=levels, bin_width=dataset.bin_width
    ).float()
    start = time.perf_counter()
    result = ode_log_likelihood(model, x, divergence=divergence, seed=seed, **ode)
    dim = x[0].numel()
    return ImageLikelihood(
        name,
        len(x),
        dim,
        dataset.bin_width,
        result,
        bits_per_dim(result.nll, dim, bin_width=dataset.bin_width),
        result.nll_std_error / (dim * math.log(2)),
        time.perf_counter() - start,
    )
