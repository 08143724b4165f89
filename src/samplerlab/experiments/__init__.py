"""Experiments: the exact-score benchmark and its reports."""

from .bench import BenchConfig, BenchRow, ProblemSummary, run_bench

__all__ = ["BenchConfig", "BenchRow", "ProblemSummary", "run_bench"]
