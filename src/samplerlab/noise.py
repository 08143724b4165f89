"""Per-sample random streams: a sample depends on its seed, not on its batch, its place in it or the device.

Each sample's stream is the counter-based generator Philox4x32-10 (Salmon, Moraes, Dror & Shaw 2011,
"Parallel random numbers: as easy as 1, 2, 3", Sec. 4) keyed by its seed: block j of the stream with seed
s is Philox(counter = (j mod 2^32, j div 2^32, 0, 0), key = (s mod 2^32, s div 2^32)), four 32-bit words,
i.e. four uniforms with 32 random bits; each pair makes two standard normals by the Box-Muller transform
(Box & Muller 1958), with tails to 6.7 sigma. So normal k of a stream depends on (seed, k) alone, and a
request for n normals per sample takes the next n of every stream. The whole batch is made at once in a
few dozen integer tensor operations on the noise's device (a few requests ahead when they are small):
no Python loop over samples, no per-sample generator objects.

Normals are made in float64 and then cast, so the same seed gives the same noise in any batch size or
order bit for bit, and in another dtype up to that dtype's rounding. On another device the integer
stream is identical; the float64 normals agree to the rounding of log, cos and sin there (a few ulp).

Seeds give different samples than samplerlab 0.1.0, whose streams were one CPU ``torch.Generator`` per
sample (correct, but made in a Python loop: most of a cheap stochastic sampler's time went into noise).
"""

from __future__ import annotations

import math
import operator
from typing import Iterable

import numpy as np
import torch
from torch import Tensor

__all__ = ["SampleNoise", "parse_seeds", "philox4x32"]

_M = (0xD2511F53, 0xCD9E8D57)  # Philox4x32 multipliers (Salmon et al. 2011, Table 2)
_W = (0x9E3779B9, 0xBB67AE85)  # Weyl key increments: the golden ratio and sqrt(3) - 1, as 32-bit fractions
_MASK = 0xFFFFFFFF
_MAX_SEED = 2**64
ROUNDS = 10  # Philox4x32-10, the variant Salmon et al. recommend (crush-resistant with a safety margin)


def _round_keys(key: Tensor, rounds: int) -> list[Tensor]:
    """The key of each round, (k0 + r W0, k1 + r W1) mod 2^32, stacked as (2, ...)."""
    k = torch.stack([key[..., 0], key[..., 1]])
    w = torch.tensor(_W, dtype=torch.int64, device=key.device).reshape(2, *([1] * (k.ndim - 1)))
    return [(k + r * w) & _MASK for r in range(rounds)]


def _philox_rounds(x: Tensor, y: Tensor, round_keys: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Philox4x32 rounds on x = (c0, c2), y = (c1, c3), stacked on dim 0; returns the final (x, y).

    A round maps (c0, c1, c2, c3) to (hi(M1 c2) ^ c1 ^ k0, lo(M1 c2), hi(M0 c0) ^ c3 ^ k1, lo(M0 c0)). The
    64-bit products of 32-bit words wrap in int64, which keeps their low 64 bits exact; multiplying the
    swapped pair gives hi and lo already in the order the next round needs, and the words are masked back
    to 32 bits only where they are multiplied next.
    """
    m = torch.tensor(_M[::-1], dtype=torch.int64, device=x.device).reshape(2, *([1] * (x.ndim - 1)))
    for r, kr in enumerate(round_keys):
        p = x.flip(0).mul_(m)  # (M1 c2, M0 c0)
        hi = p >> 32
        # in place from the second round on (the first broadcasts the counter over the batch)
        x = (hi ^ y ^ kr).bitwise_and_(_MASK) if r == 0 else hi.bitwise_xor_(y).bitwise_xor_(kr).bitwise_and_(_MASK)
        y = p
    return x, y & _MASK


def philox4x32(counter: Tensor, key: Tensor, rounds: int = 10) -> Tensor:
    """Philox4x32-``rounds`` (Salmon et al. 2011) of ``counter`` (..., 4) under ``key`` (..., 2), 32-bit words
    held in int64; checked against the known-answer vectors of the reference implementation."""
    x = torch.stack([counter[..., 0], counter[..., 2]])
    y = torch.stack([counter[..., 1], counter[..., 3]])
    x, y = _philox_rounds(x, y, _round_keys(key, rounds))
    return torch.stack([x[0], y[0], x[1], y[1]], dim=-1)


def _seed_array(seeds: Iterable[int]) -> np.ndarray:
    """The seeds as uint64, each checked to be an integer in [0, 2^64); an error names the first bad one."""
    values = seeds if isinstance(seeds, range) else list(seeds)
    array = np.asarray(values)
    if (
        array.ndim == 1
        and array.dtype.kind in "iu"
        and (array.dtype.kind == "u" or len(array) == 0 or array.min() >= 0)
    ):
        return array.astype(np.uint64)
    for s in values:  # the slow path finds and names the culprit (floats, strings, negatives, > 2^64)
        try:
            value = operator.index(s)
        except TypeError:
            raise ValueError(f"seeds must be integers in [0, 2^64), got {s!r}") from None
        if not 0 <= value < _MAX_SEED:
            raise ValueError(f"seeds must be integers in [0, 2^64), got {value}")
    return np.array([operator.index(s) for s in values], dtype=np.uint64)


class SampleNoise:
    """Standard normal noise, one reproducible stream per sample (module docstring).

    Normal k of the stream with seed s is a function of (s, k) alone; each request takes the next n normals
    of every stream. ``randn(*shape)`` gives a (B, *shape) tensor in ``dtype``; ``randn_like(x)`` follows
    x's dtype and device.
    """

    PREFETCH = 32  # normals per stream made ahead of small requests (it never changes the values)

    def __init__(self, seeds: Iterable[int], device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        self._seeds = _seed_array(seeds)
        if not len(self._seeds):
            raise ValueError("at least one seed is needed")
        self.device = torch.device(device)
        self.dtype = dtype
        self._keys: list[Tensor] | None = None
        self._next_block = 0  # the Philox counter of the next block to make
        self._buffer = torch.empty(len(self), 0, dtype=torch.float64, device=self.device)

    @property
    def seeds(self) -> list[int]:
        return self._seeds.tolist()

    def __len__(self) -> int:
        return len(self._seeds)

    def _blocks(self, blocks: int) -> Tensor:
        """(B, 4 blocks) float64 normals from the next ``blocks`` Philox blocks of every stream."""
        if self._keys is None:  # each round's key of every stream, (2, B, 1) per round: they depend on the seeds
            words = np.stack([self._seeds & _MASK, self._seeds >> np.uint64(32)], axis=-1).astype(np.int64)
            key = torch.from_numpy(words).to(self.device)
            self._keys = _round_keys(key.unsqueeze(1), ROUNDS)
        j = torch.arange(self._next_block, self._next_block + blocks, dtype=torch.int64, device=self.device)
        self._next_block += blocks
        zero = torch.zeros_like(j)
        # counter (j mod 2^32, j div 2^32, 0, 0) as x = (c0, c2), y = (c1, c3): (2, 1, blocks), broadcast over B
        x, y = _philox_rounds(
            torch.stack([j & _MASK, zero]).unsqueeze(1), torch.stack([j >> 32, zero]).unsqueeze(1), self._keys
        )
        # Box-Muller on the word pairs (c0, c1) and (c2, c3); u1 = (w + 1) / 2^32 in (0, 1] keeps the log finite
        radius = torch.sqrt(-2.0 * torch.log((x + 1).to(torch.float64) * 2.0**-32))  # (2, B, blocks)
        angle = y.to(torch.float64) * (2 * math.pi * 2.0**-32)
        out = torch.empty(len(self), blocks, 2, 2, dtype=torch.float64, device=self.device)  # (B, block, pair, cos/sin)
        pairs = out.permute(2, 0, 1, 3)  # written in place: no transposing copy
        torch.mul(radius, torch.cos(angle), out=pairs[..., 0])
        torch.mul(radius, torch.sin(angle), out=pairs[..., 1])
        return out.reshape(len(self), 4 * blocks)

    def _take(self, count: int) -> Tensor:
        """The next ``count`` normals of every stream, (B, count) float64."""
        left = self._buffer.shape[1]
        if left < count:
            make = max(count - left, self.PREFETCH)
            self._buffer = torch.cat([self._buffer, self._blocks((make + 3) // 4)], dim=1)
        out, self._buffer = self._buffer[:, :count], self._buffer[:, count:]
        return out

    def randn(self, *shape: int) -> Tensor:
        """A (B, *shape) standard normal tensor, row b drawn from sample b's stream."""
        count = math.prod(int(n) for n in shape)
        return self._take(count).reshape(len(self), *shape).to(dtype=self.dtype)

    def randn_like(self, x: Tensor) -> Tensor:
        if x.shape[0] != len(self):
            raise ValueError(f"batch of {x.shape[0]} but {len(self)} seeded streams")
        return self._take(math.prod(x.shape[1:])).reshape(x.shape).to(device=x.device, dtype=x.dtype)


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
