"""Metrics for samples: distances to exact references on analytic problems."""

from .analytic import nll_gap, rms_distance, sliced_wasserstein2
from .distribution import feature_statistics, frechet_distance, frechet_distance_gaussians, precision_recall
from .likelihood import Divergence, LikelihoodResult, bits_per_dim, ode_log_likelihood, uniform_dequantise
from .reference import reference_ode_solution

__all__ = [
    "rms_distance",
    "sliced_wasserstein2",
    "nll_gap",
    "reference_ode_solution",
    "frechet_distance",
    "frechet_distance_gaussians",
    "feature_statistics",
    "precision_recall",
    "Divergence",
    "LikelihoodResult",
    "ode_log_likelihood",
    "bits_per_dim",
    "uniform_dequantise",
]
