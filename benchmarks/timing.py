"""Shared by the benchmark scripts (run as ``python benchmarks/NAME.py``, so this folder is on sys.path)."""

from __future__ import annotations

import time


def best_of(fn, repeats: int) -> float:
    """The fastest of ``repeats`` timed runs of ``fn()``, in seconds: the least disturbed by other work."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)
