"""samplerlab: interchangeable, measurable samplers for diffusion models.

Layers (lower never import upper): processes -> denoisers -> grids -> solvers -> sampling;
analytic models and problems beside denoisers; metrics, experiments and the CLI on top.
"""

from .analytic import GaussianMixture, JointGaussianMixture
from .denoisers import (
    ClassifierFreeGuidance,
    DiscreteDDPMAdapter,
    EDMPrecond,
    NFECounter,
    Prediction,
    PredictionAdapter,
)
from .grids import GRIDS, make_grid, validate_grid
from .noise import SampleNoise
from .processes import EDM, OUVE, PROCESSES, VE, RectifiedFlow, SubVP, VPCosine, VPLinear, make_process
from .sampling import SampleResult, StepRecord, generate, prior_sample, sample
from .solvers import SOLVERS, make_solver

__version__ = "0.2.0"

__all__ = [
    "GaussianMixture",
    "JointGaussianMixture",
    "ClassifierFreeGuidance",
    "DiscreteDDPMAdapter",
    "EDMPrecond",
    "NFECounter",
    "Prediction",
    "PredictionAdapter",
    "GRIDS",
    "make_grid",
    "validate_grid",
    "SampleNoise",
    "SampleResult",
    "StepRecord",
    "generate",
    "prior_sample",
    "sample",
    "EDM",
    "OUVE",
    "PROCESSES",
    "VE",
    "RectifiedFlow",
    "SubVP",
    "VPCosine",
    "VPLinear",
    "make_process",
    "SOLVERS",
    "make_solver",
]
