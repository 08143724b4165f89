"""Thread settings. Two busy cores are easily oversubscribed: torch with 2 threads while
anything else runs was seen 10x slower than with 1, so the CLI sets a thread count on
purpose (``--threads``, or the SAMPLERLAB_THREADS environment variable; default 1)."""

from __future__ import annotations

import os

import torch

__all__ = ["configure_threads", "default_threads"]


def default_threads() -> int:
    value = os.environ.get("SAMPLERLAB_THREADS", "1")
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"SAMPLERLAB_THREADS must be a positive integer, got {value!r}") from None
    if n < 1:
        raise ValueError(f"SAMPLERLAB_THREADS must be a positive integer, got {value!r}")
    return n


def configure_threads(n: int | None = None) -> int:
    n = default_threads() if n is None else n
    if n < 1:
        raise ValueError(f"thread count must be a positive integer, got {n}")
    torch.set_num_threads(n)
    return n
