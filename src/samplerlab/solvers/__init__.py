"""Solvers: one step (or one family of steps) each, all run by ``samplerlab.sampling.sample``.

Where to find what:
  ode.py   Euler, Heun (Karras et al. 2022, Alg. 1)
  edm.py   the EDM stochastic sampler (Karras et al. 2022, Alg. 2)
  sde.py   Euler-Maruyama on the reverse SDE, DDIM (eta), Euler ancestral
"""

from .base import SOLVERS, Solver, StepContext, StepOutput, make_solver
from .edm import EDMStochastic
from .ode import Euler, Heun
from .sde import DDIM, EulerAncestral, EulerMaruyama, ancestral_split

__all__ = [
    "SOLVERS",
    "Solver",
    "StepContext",
    "StepOutput",
    "make_solver",
    "Euler",
    "Heun",
    "EDMStochastic",
    "EulerMaruyama",
    "DDIM",
    "EulerAncestral",
    "ancestral_split",
]
