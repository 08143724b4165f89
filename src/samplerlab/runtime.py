"""Thread settings. Two busy cores are easily oversubscribed: torch with 2 threads while
anything else runs was seen 10x slower than with 1, so the CLI sets a thread count on
purpose (``--threads``, or the SAMPLERLAB_THREADS environment variable; default 1).
Training is a foreground job that owns the machine, so ``samplerlab train`` defaults to the cores
this process may use, shared among the torchrun processes of one node (``foreground_threads``)."""

from __future__ import annotations

import os

import torch

__all__ = ["configure_threads", "default_threads", "foreground_threads"]


def foreground_threads() -> int:
    """Usable cores divided among this node's torchrun processes (LOCAL_WORLD_SIZE), at least 1."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def default_threads(fallback: int = 1) -> int:
    value = os.environ.get("SAMPLERLAB_THREADS", str(fallback))
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"SAMPLERLAB_THREADS must be a positive integer, got {value!r}") from None
    if n < 1:
        raise ValueError(f"SAMPLERLAB_THREADS must be a positive integer, got {value!r}")
    return n


def configure_threads(n: int | None = None, fallback: int = 1) -> int:
    n = default_threads(fallback) if n is None else n
    if n < 1:
        raise ValueError(f"thread count must be a positive integer, got {n}")
    torch.set_num_threads(n)
    return n
