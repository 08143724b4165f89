"""Per-sample random streams: a sample depends on its seed, not on its batch, its place in it or the device.

Each sample's stream is the counter-based generator Philox4x32-10 (Salmon, Moraes, Dror & Shaw 2011,
"Parallel random numbers: as easy as 1, 2, 3", Sec. 4) keyed by its seed: block j of the stream with seed
s is Philox(counter = (j mod 2^32, j div 2^32, 0, 0), key = (s mod 2^32, s div 2^32)), four 32-bit words,
i.e. four uniforms with 32 random bits; each pair makes two standard normals by the Box-Muller transform
(Box & Muller 1958), with tails to 6.7 sigma. So normal k of a stream depends on (seed, k) alone, and a
request for n normals per sample takes the next n of every stream. The whole batch is made at once in a
few dozen integer tensor operations on the noise's device, usually once per run (``plan``): no Python
loop over samples, no per-sample generator objects.

The Box-Muller step runs in float64 for a float64 request and in float32 for any other (twice as fast;
float16 and bfloat16 are cast from it). Either way the same seed gives the same noise in any batch size,
order or split of requests, bit for bit. The float32 normals equal the float64 ones up to float32 rounding
(the largest absolute gap, ~1e-5, is at radii below 1e-2, where u = 1 - r^2 / 2 is coarse in float32).
On another device the integer stream is identical; the normals agree to the rounding of log, cos and sin
there (a few ulp).

Seeds give different samples than samplerlab 0.1.0, whose streams were one CPU ``torch.Generator`` per
sample (correct, but made in a Python loop: most of a cheap stochastic sampler's time went into noise).
"""

from __future__ import annotations

import math
import operator
import sys
import threading
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


class _Scratch(threading.local):
    """Scratch tensors reused by every ``SampleNoise`` of a thread. Fresh memory costs a page fault per 4 KiB
    on first touch, and for the batches of a cheap model that cost more than the arithmetic (measured with
    ``benchmarks/noise.py``). Buffers over ``LIMIT`` bytes are not kept, so at most a few times that stay held.
    """

    LIMIT = 2**23

    def __init__(self):
        self.buffers: dict[tuple[str, torch.dtype, torch.device], Tensor] = {}

    def get(self, slot: str, shape: torch.Size, dtype: torch.dtype, device: torch.device) -> Tensor:
        """An uninitialised tensor of ``shape``, the same memory each time for the same slot."""
        numel = math.prod(shape)
        if numel * dtype.itemsize > self.LIMIT:
            return torch.empty(shape, dtype=dtype, device=device)
        key = (slot, dtype, device)
        buffer = self.buffers.get(key)
        if buffer is None or buffer.numel() < numel:
            buffer = self.buffers[key] = torch.empty(numel, dtype=dtype, device=device)
        return buffer[:numel].view(shape)


_scratch = _Scratch()


def _as_int32(words: Tensor) -> Tensor:
    """32-bit words held in int64, as int32 with the same bits (so xor can run on half the bytes)."""
    return ((words ^ 0x80000000) - 0x80000000).to(torch.int32)


def _round_keys(key: Tensor, rounds: int) -> list[Tensor]:
    """The key of each round, (k0 + r W0, k1 + r W1) mod 2^32, stacked as (2, ...), as int32 words; all
    rounds in a few in-place operations on scratch memory."""
    k = torch.stack([key[..., 0], key[..., 1]]).unsqueeze(0)
    trailing = [1] * (k.ndim - 2)
    r = torch.arange(rounds, dtype=torch.int64, device=key.device).reshape(rounds, 1, *trailing)
    w = torch.tensor(_W, dtype=torch.int64, device=key.device).reshape(1, 2, *trailing)
    shape = torch.broadcast_shapes(k.shape, r.shape)
    words = torch.add(k, r * w, out=_scratch.get("keys", shape, torch.int64, key.device)).bitwise_and_(_MASK)
    return list(words.bitwise_xor_(0x80000000).sub_(0x80000000).to(torch.int32).unbind(0))  # as in _as_int32


def _words(products: Tensor) -> tuple[Tensor, Tensor]:
    """The (lo, hi) 32-bit halves of int64 products, as int32 views: no shift, no copy."""
    words = products.view(torch.int32)
    if sys.byteorder == "little":
        return words[..., 0::2], words[..., 1::2]
    return words[..., 1::2], words[..., 0::2]  # pragma: no cover - no big-endian machine runs torch today


def _philox_rounds(x: Tensor, y: Tensor, round_keys: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Philox4x32 rounds on x = (c0, c2), y = (c1, c3), stacked on dim 0, under ``round_keys`` (int32, from
    ``_round_keys``); returns the final (x, y) as 32-bit words in int64.

    A round maps (c0, c1, c2, c3) to (hi(M1 c2) ^ c1 ^ k0, lo(M1 c2), hi(M0 c0) ^ c3 ^ k1, lo(M0 c0)). The
    64-bit products of 32-bit words wrap in int64, which keeps their bits exact; hi and lo are then read as
    the int32 halves of the product, and multiplying the swapped pair gives them in the order the next round
    needs. The xors run in int32, and the words are widened (and masked) to int64 only to be multiplied.
    Every round works in the same few buffers, two for the products since y is a view of the previous one:
    on this kind of work fresh allocations (page faults) cost more than the arithmetic. The results are
    scratch memory (``_scratch``), valid until the next call.
    """
    shape = torch.broadcast_shapes(x.shape, round_keys[0].shape)
    m = torch.tensor(_M[::-1], dtype=torch.int64, device=x.device).reshape(2, *([1] * (x.ndim - 1)))
    lo, hi = _words(x.flip(0).mul_(m))  # round 0 on the counter alone, before it is broadcast over the batch
    mixed = _scratch.get("mixed", shape, torch.int32, x.device)
    torch.bitwise_xor(torch.bitwise_xor(hi, _as_int32(y)), round_keys[0], out=mixed)
    wide = _scratch.get("wide", shape, torch.int64, x.device)
    products = (_scratch.get("p0", shape, torch.int64, x.device), _scratch.get("p1", shape, torch.int64, x.device))
    y = lo
    for r in range(1, len(round_keys)):
        wide.copy_(mixed).bitwise_and_(_MASK)
        p = products[r % 2]
        torch.mul(wide[1], _M[1], out=p[0])
        torch.mul(wide[0], _M[0], out=p[1])
        lo, hi = _words(p)
        torch.bitwise_xor(hi, y, out=mixed).bitwise_xor_(round_keys[r])
        y = lo
    y_wide = products[len(round_keys) % 2]  # the free buffer
    return wide.copy_(mixed).bitwise_and_(_MASK), y_wide.copy_(y).bitwise_and_(_MASK)


def philox4x32(counter: Tensor, key: Tensor, rounds: int = 10) -> Tensor:
    """Philox4x32-``rounds`` (Salmon et al. 2011) of ``counter`` (..., 4) under ``key`` (..., 2), 32-bit words
    held in int64; checked against the known-answer vectors of the reference implementation."""
    x = torch.stack([counter[..., 0], counter[..., 2]])
    y = torch.stack([counter[..., 1], counter[..., 3]])
    x, y = _philox_rounds(x, y, _round_keys(key, rounds))
    return torch.stack([x[0], y[0], x[1], y[1]], dim=-1)


def _seed_array(seeds: Iterable[int]) -> np.ndarray:
    """The seeds as uint64, each checked to be an integer in [0, 2^64); an error names the first bad one."""
    if isinstance(seeds, range) and (
        len(seeds) == 0 or 0 <= min(seeds[0], seeds[-1]) <= max(seeds[0], seeds[-1]) < 2**63
    ):
        return np.arange(seeds.start, seeds.stop, seeds.step, dtype=np.int64).astype(np.uint64)
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
    MAX_AHEAD = 2**22  # at most this many normals (B x per stream) made ahead of need: 32 MiB of float64

    def __init__(self, seeds: Iterable[int], device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        self._seeds = _seed_array(seeds)
        if not len(self._seeds):
            raise ValueError("at least one seed is needed")
        self.device = torch.device(device)
        self.dtype = dtype
        self._keys: list[Tensor] | None = None
        self._position = 0  # the stream index of the next normal to hand out
        self._buffer = torch.empty(len(self), 0, dtype=torch.float64, device=self.device)  # normals made ahead
        self._planned = 0  # requests announced by plan() and not yet taken

    @property
    def seeds(self) -> list[int]:
        return self._seeds.tolist()

    def __len__(self) -> int:
        return len(self._seeds)

    def _keys_of_rounds(self) -> list[Tensor]:
        """Each round's key of every stream, (2, 1, B) int32 per round: they depend on the seeds alone."""
        if self._keys is None:
            words = np.stack([self._seeds & _MASK, self._seeds >> np.uint64(32)], axis=-1).astype(np.int64)
            self._keys = _round_keys(torch.from_numpy(words).to(self.device).unsqueeze(0), ROUNDS)
        return self._keys

    def _blocks(self, first: int, blocks: int, precision: torch.dtype) -> Tensor:
        """(B, 4 blocks) normals in ``precision`` from Philox blocks first .. first + blocks - 1 of every stream."""
        j = torch.arange(first, first + blocks, dtype=torch.int64, device=self.device)
        zero = torch.zeros_like(j)
        # counter (j mod 2^32, j div 2^32, 0, 0) as x = (c0, c2), y = (c1, c3): (2, blocks, 1), broadcast over B
        # (the batch innermost, so the keys broadcast along contiguous memory)
        x, y = _philox_rounds(
            torch.stack([j & _MASK, zero]).unsqueeze(2),
            torch.stack([j >> 32, zero]).unsqueeze(2),
            self._keys_of_rounds(),
        )
        # Box-Muller on the word pairs (c0, c1) and (c2, c3); u1 = (w + 1) / 2^32 in (0, 1] keeps the log finite.
        # In place, in the order of sqrt(-2 log((x + 1) 2^-32)) and y 2 pi 2^-32.
        radius = _scratch.get("radius", x.shape, precision, self.device).copy_(x)  # (2 pairs, blocks, B)
        radius.add_(1).mul_(2.0**-32).log_().mul_(-2.0).sqrt_()
        angle = _scratch.get("angle", x.shape, precision, self.device).copy_(y).mul_(2 * math.pi * 2.0**-32)
        cos = torch.cos(angle, out=_scratch.get("cos", x.shape, precision, self.device))
        out = torch.empty(len(self), blocks, 2, 2, dtype=precision, device=self.device)  # (B, block, pair, cos/sin)
        pairs = out.permute(2, 1, 0, 3)
        # products made contiguous and then copied into the strided view: much faster than mul(out=strided)
        pairs[..., 0].copy_(cos.mul_(radius))
        pairs[..., 1].copy_(angle.sin_().mul_(radius))
        return out.reshape(len(self), 4 * blocks)

    def plan(self, requests: int) -> None:
        """Say that about ``requests`` more requests of one size will follow (a sampler knows its steps).

        The next time the buffer runs dry, that many are made in one go (up to ``MAX_AHEAD`` normals), so
        the integer rounds run once per run rather than once per step. A hint only: the values never depend
        on it, and more or fewer requests than planned are fine.
        """
        self._planned = max(0, int(requests))

    def _take(self, count: int, dtype: torch.dtype) -> Tensor:
        """The next ``count`` normals of every stream, (B, count), made in the precision ``dtype`` needs."""
        precision = torch.float64 if dtype == torch.float64 else torch.float32
        if self._buffer.dtype != precision:  # remake what is buffered in the new precision: same stream position
            self._buffer = self._buffer.new_empty(len(self), 0, dtype=precision)
        left = self._buffer.shape[1]
        if left < count:
            ahead = count * self._planned if self._planned else self.PREFETCH
            make = max(count - left, min(ahead, self.MAX_AHEAD // len(self)))
            start = self._position + left  # the stream index of the first normal to make
            skip = start % 4  # only after a change of precision is the buffer's end inside a block
            fresh = self._blocks(start // 4, (skip + make + 3) // 4, precision)[:, skip:]
            self._buffer = torch.cat([self._buffer, fresh], dim=1) if left else fresh
        self._planned = max(0, self._planned - 1)
        self._position += count
        out, self._buffer = self._buffer[:, :count], self._buffer[:, count:]
        return out

    def randn(self, *shape: int) -> Tensor:
        """A (B, *shape) standard normal tensor, row b drawn from sample b's stream."""
        count = math.prod(int(n) for n in shape)
        return self._take(count, self.dtype).reshape(len(self), *shape).to(dtype=self.dtype)

    def randn_like(self, x: Tensor) -> Tensor:
        if x.shape[0] != len(self):
            raise ValueError(f"batch of {x.shape[0]} but {len(self)} seeded streams")
        return self._take(math.prod(x.shape[1:]), x.dtype).reshape(x.shape).to(device=x.device, dtype=x.dtype)


MAX_PARSED_SEEDS = 1_000_000


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
                if b - a + 1 + len(seeds) > MAX_PARSED_SEEDS:
                    raise OverflowError
                seeds.extend(range(a, b + 1))
            else:
                seeds.append(int(part))
        except OverflowError:
            raise ValueError(f"seed range {part!r}: more than {MAX_PARSED_SEEDS} seeds in one run") from None
        except (TypeError, ValueError):
            raise ValueError(f"bad seed range {part!r}; write e.g. '0-63', '1,5,9' or '0-9,20'") from None
    if not seeds:
        raise ValueError(f"no seeds in {text!r}")
    return seeds
