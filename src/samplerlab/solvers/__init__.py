"""Solvers: one step (or one family of steps) each, all run by ``samplerlab.sampling.sample``.

Where to find what:
  ode.py   Euler, Heun (Karras et al. 2022, Alg. 1)
  edm.py   the EDM stochastic sampler (Karras et al. 2022, Alg. 2)
  sde.py   Euler-Maruyama and reverse diffusion on the reverse SDE, DDIM (eta), Euler ancestral
  exponential.py  DPM-Solver, DPM-Solver++ (singlestep, multistep), SDE-DPM-Solver++
  multistep.py    DEIS tAB / rhoAB, LMS, iPNDM
  runge_kutta.py  Butcher tableaus, rhoRK-DEIS, adaptive Dormand-Prince 5(4)
  unipc.py        UniPC (UniP predictor, UniC corrector, bh1 / bh2)
  predictor_corrector.py  PC samplers (any predictor solver; Langevin correctors), reverse diffusion, annealed Langevin
  gotta_go_fast.py        Gotta Go Fast adaptive SDE solver
  adaptive.py     the PI step-size controller and step counts the adaptive solvers share
  base.py         StepContext, Solver, the DenoisedStep template, History, effective order, the registry
  crash.py        CRASH: exact steps of the reparameterised reverse SDE in x / m (eta = 0: DDIM)
"""

from .adaptive import AdaptiveStats, PIController
from .base import (
    SOLVERS,
    DenoisedStep,
    History,
    HistorySolver,
    Solver,
    StepContext,
    StepOutput,
    effective_order,
    make_solver,
    parse_solver_spec,
    solver_from_spec,
)
from .crash import CRASH
from .edm import EDMStochastic
from .exponential import DPMSolver, DPMSolverPP, SDEDPMSolverPP
from .gotta_go_fast import GottaGoFast
from .multistep import IPNDM, LMS, DEISRhoAB, DEISTimeAB
from .ode import Euler, Heun
from .predictor_corrector import (
    AnnealedLangevin,
    AnnealedLangevinCorrector,
    Corrector,
    Langevin,
    PredictorCorrector,
)
from .runge_kutta import TABLEAUS, ButcherTableau, DEISRhoRK, DormandPrince
from .sde import DDIM, EulerAncestral, EulerMaruyama, ReverseDiffusion, ancestral_split
from .unipc import UniPC

__all__ = [
    "SOLVERS",
    "Solver",
    "DenoisedStep",
    "History",
    "HistorySolver",
    "effective_order",
    "PIController",
    "AdaptiveStats",
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
    "ReverseDiffusion",
    "Corrector",
    "Langevin",
    "AnnealedLangevinCorrector",
    "AnnealedLangevin",
    "GottaGoFast",
    "CRASH",
]
