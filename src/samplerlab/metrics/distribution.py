"""Distribution distances in a feature space: Fréchet distance and precision / recall.

Fréchet distance (Heusel et al. 2017) between Gaussians fitted to two feature sets:
    FD = ||mu_1 - mu_2||^2 + tr(C_1 + C_2 - 2 (C_1^{1/2} C_2 C_1^{1/2})^{1/2}),
computed through a symmetric square root (stable for nearly singular covariances).
Improved precision and recall (Kynkäänniemi et al. 2019): each set's manifold is the union of balls
reaching each point's k-th nearest neighbour in that set; precision is the share of generated samples
inside the real manifold, recall the share of real samples inside the generated one.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "frechet_distance",
    "frechet_distance_gaussians",
    "feature_statistics",
    "precision_recall",
    "kernel_inception_distance",
    "kid_reference_term",
    "kid_leave_one_out",
    "paired_kid_difference",
]


def _sqrtm_psd(m: Tensor) -> Tensor:
    evals, evecs = torch.linalg.eigh(0.5 * (m + m.T))
    return (evecs * evals.clamp_min(0).sqrt()) @ evecs.T


def frechet_distance_gaussians(mu1: Tensor, c1: Tensor, mu2: Tensor, c2: Tensor) -> float:
    mu1, mu2, c1, c2 = (t.to(torch.float64) for t in (mu1, mu2, c1, c2))
    s1 = _sqrtm_psd(c1)
    cross = _sqrtm_psd(s1 @ c2 @ s1)
    return float((mu1 - mu2).pow(2).sum() + torch.trace(c1 + c2 - 2 * cross))


def feature_statistics(features: Tensor) -> tuple[Tensor, Tensor]:
    f = features.reshape(features.shape[0], -1).to(torch.float64)
    if f.shape[0] < 2:
        raise ValueError("need at least two feature vectors for a covariance")
    return f.mean(0), torch.cov(f.T).reshape(f.shape[1], f.shape[1])


def frechet_distance(features_a: Tensor, features_b: Tensor) -> float:
    return frechet_distance_gaussians(*feature_statistics(features_a), *feature_statistics(features_b))


def _radii(x: Tensor, k: int) -> Tensor:
    d = torch.cdist(x, x)
    return d.kthvalue(k + 1, dim=1).values  # the 0-th neighbour is the point itself


def _coverage(points: Tensor, centres: Tensor, radii: Tensor, chunk: int = 2048) -> Tensor:
    inside = []
    for start in range(0, points.shape[0], chunk):
        d = torch.cdist(points[start : start + chunk], centres)
        inside.append((d <= radii[None, :]).any(dim=1))
    return torch.cat(inside)


def precision_recall(real: Tensor, generated: Tensor, k: int = 3) -> tuple[float, float]:
    real = real.reshape(real.shape[0], -1).to(torch.float64)
    gen = generated.reshape(generated.shape[0], -1).to(torch.float64)
    if min(len(real), len(gen)) <= k:
        raise ValueError(f"need more than k = {k} samples in each set")
    precision = float(_coverage(gen, real, _radii(real, k)).double().mean())
    recall = float(_coverage(real, gen, _radii(gen, k)).double().mean())
    return precision, recall


def kid_reference_term(reference: Tensor) -> float:
    """1/(n(n-1)) sum_{i != j} k(y_i, y_j) of the reference features: KID's part that does not depend on the
    generated sample (compute once per reference set; blocks of 4096 rows keep the memory bounded)."""
    y = reference.reshape(reference.shape[0], -1).to(torch.float64)
    n, d = y.shape
    if n < 2:
        raise ValueError(f"KID needs at least 2 reference samples, got {n}")
    total = 0.0
    for start in range(0, n, 4096):
        block = y[start : start + 4096]
        total += float(((block @ y.T / d + 1) ** 3).sum()) - float(((block * block).sum(1) / d + 1).pow(3).sum())
    return total / (n * (n - 1))


def kid_leave_one_out(
    generated: Tensor, reference: Tensor, reference_term: float | None = None
) -> tuple[float, Tensor]:
    """KID (see ``kernel_inception_distance``) and its m delete-one values (generated sample i left out), in
    closed form from one kernel matrix: the jackknife's raw material, also for paired differences."""
    x = generated.reshape(generated.shape[0], -1).to(torch.float64)
    y = reference.reshape(reference.shape[0], -1).to(torch.float64)
    m, n, d = len(x), len(y), x.shape[1]
    if m < 3 or n < 2:
        raise ValueError(f"KID needs at least 3 generated and 2 reference samples, got {m} and {n}")
    if y.shape[1] != d:
        raise ValueError(f"KID: feature sizes differ ({d} generated, {y.shape[1]} reference)")
    term_yy = kid_reference_term(y) if reference_term is None else reference_term
    k_xx = (x @ x.T / d + 1) ** 3
    k_xx.fill_diagonal_(0)
    row_xx = k_xx.sum(1)  # sum_{j != i} k(x_i, x_j)
    row_xy = torch.zeros(m, dtype=torch.float64)
    for start in range(0, n, 4096):
        row_xy += ((x @ y[start : start + 4096].T / d + 1) ** 3).sum(1)
    s_xx, s_xy = float(row_xx.sum()), float(row_xy.sum())
    kid = s_xx / (m * (m - 1)) + term_yy - 2 * s_xy / (m * n)
    # leaving x_i out removes its row and column from the x-x sum and its row from the x-y sum
    loo = (s_xx - 2 * row_xx) / ((m - 1) * (m - 2)) + term_yy - 2 * (s_xy - row_xy) / ((m - 1) * n)
    return kid, loo


def _jackknife_se(loo: Tensor) -> float:
    m = len(loo)
    return math.sqrt((m - 1) / m * float(((loo - loo.mean()) ** 2).sum()))


def kernel_inception_distance(
    generated: Tensor, reference: Tensor, reference_term: float | None = None
) -> tuple[float, float]:
    """KID (Bińkowski et al. 2018, "Demystifying MMD GANs", Sec. 4 and eq. 4-5): the unbiased estimate of the
    squared MMD between the two feature sets under the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3,

        KID = 1/(m(m-1)) sum_{i != j} k(x_i, x_j) + 1/(n(n-1)) sum_{i != j} k(y_i, y_j) - 2/(mn) sum k(x_i, y_j),

    and its standard error over the generated sample (delete-one jackknife, the reference held fixed; closed
    form, so it costs one kernel matrix). Unbiased at every sample size, unlike FD, so it suits the few
    hundred samples of small studies; it can be slightly negative when the distributions agree.
    ``reference_term``: ``kid_reference_term(reference)``, when already known."""
    kid, loo = kid_leave_one_out(generated, reference, reference_term)
    return kid, _jackknife_se(loo)


def paired_kid_difference(
    generated_a: Tensor, generated_b: Tensor, reference: Tensor, reference_term: float | None = None
) -> tuple[float, float]:
    """KID(a) - KID(b) and its standard error when sample i of a and of b come from the same seed (two
    samplers on the same noise): the jackknife leaves seed i out of both, so what the seeds share cancels
    and the error is that of the difference, far smaller than either KID's own."""
    if len(generated_a) != len(generated_b):
        raise ValueError(f"paired KID needs samples from the same seeds, got {len(generated_a)} and {len(generated_b)}")
    term = kid_reference_term(reference) if reference_term is None else reference_term
    kid_a, loo_a = kid_leave_one_out(generated_a, reference, term)
    kid_b, loo_b = kid_leave_one_out(generated_b, reference, term)
    return kid_a - kid_b, _jackknife_se(loo_a - loo_b)
