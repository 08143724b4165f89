"""Distribution distances in a feature space: Fréchet distance and precision / recall.

Fréchet distance (Heusel et al. 2017) between Gaussians fitted to two feature sets:
    FD = ||mu_1 - mu_2||^2 + tr(C_1 + C_2 - 2 (C_1^{1/2} C_2 C_1^{1/2})^{1/2}),
computed through a symmetric square root (stable for nearly singular covariances).
Improved precision and recall (Kynkäänniemi et al. 2019): each set's manifold is the union of balls
reaching each point's k-th nearest neighbour in that set; precision is the share of generated samples
inside the real manifold, recall the share of real samples inside the generated one.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["frechet_distance", "frechet_distance_gaussians", "feature_statistics", "precision_recall"]


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
