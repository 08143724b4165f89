"""Calibrated few-step sampling: a solver's time grid (and the levels its model sees) fitted to a model
against a teacher, checked on held-out seeds, saved as a grid file usable wherever a grid is."""

from .calibrate import BASELINE_GRIDS, CalibrationReport, SeedSplit, best_builtin_grid, calibrate
from .learn import CalibrationMethod, GridParameters, Scores, learn, run_sampler, score
from .teacher import Target, TeacherSet, fingerprint, solve_teacher

__all__ = [
    "BASELINE_GRIDS",
    "CalibrationMethod",
    "CalibrationReport",
    "GridParameters",
    "Scores",
    "SeedSplit",
    "Target",
    "TeacherSet",
    "best_builtin_grid",
    "calibrate",
    "fingerprint",
    "learn",
    "run_sampler",
    "score",
    "solve_teacher",
]
