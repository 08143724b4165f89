"""Metrics for samples: distances to exact references on analytic problems."""

from .analytic import nll_gap, rms_distance, sliced_wasserstein2
from .reference import reference_ode_solution

__all__ = ["rms_distance", "sliced_wasserstein2", "nll_gap", "reference_ode_solution"]
