"""Solvers: one step (or one family of steps) each, all run by ``samplerlab.sampling.sample``.

Where to find what:
  ode.py   Euler, Heun (Karras et al. 2022, Alg. 1)
  edm.py   the EDM stochastic sampler (Karras et al. 2022, Alg. 2)
  sde.py   Euler-Maruyama on the reverse SDE, DDIM (eta), Euler ancestral
  exponential.py  DPM-Solver, DPM-Solver++ (singlestep, multistep), SDE-DPM-Solver++
  multistep.py    DEIS tAB / rhoAB, LMS, iPNDM
  runge_kutta.py  Butcher tableaus, rhoRK-DEIS, adaptive Dormand-Prince 5(4)
  unipc.py        UniPC (UniP predictor, UniC corrector, bh1 / bh2)
  predictor_corrector.py  PC samplers (reverse diffusion, EM, ancestral; Langevin correctors), annealed Langevin
  gotta_go_fast.py        Gotta Go Fast adaptive SDE solver
  crash.py        CRASH: exact steps of the reparameterised reverse SDE in x / m (eta = 0: DDIM)
"""

from .base import SOLVERS, Solver, StepContext, StepOutput, make_solver, parse_solver_spec, solver_from_spec
from .edm import EDMStochastic
from .exponential import DPMSolver, DPMSolverPP, SDEDPMSolverPP
from .multistep import IPNDM, LMS, DEISRhoAB, DEISTimeAB
from .unipc import UniPC
from .predictor_corrector import AnnealedLangevin, Corrector, Predictor, PredictorCorrector
from .gotta_go_fast import GottaGoFast
from .crash import CRASH
from .runge_kutta import TABLEAUS, ButcherTableau, DEISRhoRK, DormandPrince
from .ode import Euler, Heun
from .sde import DDIM, EulerAncestral, EulerMaruyama, ancestral_split

__all__ = [
    "SOLVERS",
    "Solver",
    "StepContext",
    "StepOutput",
    "make_solver",
    "parse_solver_spec",
    "solver_from_spec",
    "Euler",
    "Heun",
    "EDMStochastic",
    "EulerMaruyama",
    "DDIM",
    "EulerAncestral",
    "ancestral_split",
    "DPMSolver",
    "DPMSolverPP",
    "SDEDPMSolverPP",
    "DEISTimeAB",
    "DEISRhoAB",
    "LMS",
    "IPNDM",
    "ButcherTableau",
    "TABLEAUS",
    "DEISRhoRK",
    "DormandPrince",
    "UniPC",
    "PredictorCorrector",
    "Predictor",
    "Corrector",
    "AnnealedLangevin",
    "GottaGoFast",
    "CRASH",
]
