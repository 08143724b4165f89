"""Per-sample random streams: a sample depends on its seed, not on its batch or device.

Each sample owns a CPU ``torch.Generator`` seeded with its seed and draws its
standard normals in float64 on the CPU, then they are cast and moved. So the
same seed gives the same noise whatever the batch size, batch order, dtype
(up to rounding) or device.

Draws are buffered: each stream is read in blocks of ``BLOCK`` values (or the
request's size, if larger), and every sample consumes its own block in lockstep.
Block sizes depend only on the sequence of requested shapes, never on the
batch, so the guarantee holds while one Python call per sample per block,
instead of per step, keeps cheap models cheap.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor

__all__ = ["SampleNoise", "parse_seeds"]


class SampleNoise:
    BLOCK = 1024  # values drawn per stream at a time; part of what a seed means, so fixed

    def __init__(self, seeds: Iterable[int], device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        self.seeds = [int(s) for s in seeds]
        if not self.seeds:
            raise ValueError("at least one seed is needed")
        self.device = torch.device(device)
        self.dtype = dtype
        self._generators = [torch.Generator().manual_seed(s) for s in self.seeds]
        self._buffer = torch.empty(len(self.seeds), 0, dtype=torch.float64)
        self._cursor = 0

    def __len__(self) -> int:
        return len(self.seeds)

    def _take(self, count: int) -> Tensor:
        left = self._buffer.shape[1] - self._cursor
        if left < count:
            block = max(self.BLOCK, count - left)
            fresh = torch.stack([torch.randn(block, generator=g, dtype=torch.float64) for g in self._generators])
            self._buffer = torch.cat([self._buffer[:, self._cursor :], fresh], dim=1)
            self._cursor = 0
        out = self._buffer[:, self._cursor : self._cursor + count]
        self._cursor += count
        return out

    def randn(self, *shape: int) -> Tensor:
        """A (B, *shape) standard normal tensor, row b drawn from sample b's stream."""
        count = 1
        for n in shape:
            count *= int(n)
        return self._take(count).reshape(len(self), *shape).to(device=self.device, dtype=self.dtype)

    def randn_like(self, x: Tensor) -> Tensor:
        if x.shape[0] != len(self):
            raise ValueError(f"batch of {x.shape[0]} but {len(self)} seeded streams")
        return self.randn(*x.shape[1:]).to(device=x.device, dtype=x.dtype)


def parse_seeds(text: str) -> list[int]:
    """'0-63' -> [0..63]; '1,5,9' -> [1, 5, 9]; '3-5,10' -> [3, 4, 5, 10]."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part[1:]:
                lo, hi = part.split("-", 1) if not part.startswith("-") else (None, None)
                a, b = int(lo), int(hi)
                if b < a:
                    raise ValueError
                seeds.extend(range(a, b + 1))
            else:
                seeds.append(int(part))
        except (TypeError, ValueError):
            raise ValueError(f"bad seed range {part!r}; write e.g. '0-63', '1,5,9' or '0-9,20'") from None
    if not seeds:
        raise ValueError(f"no seeds in {text!r}")
    return seeds
