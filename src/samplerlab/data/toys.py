"""2-D toy distributions for low-dimensional denoisers (seeded, scaled to roughly unit variance)."""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from ..registry import Registry

__all__ = ["TOYS", "make_toy"]

TOYS: Registry[Callable[[int, torch.Generator], Tensor]] = Registry("toy data set")


@TOYS.register("ring")
def ring(n: int, g: torch.Generator, modes: int = 8, std: float = 0.05) -> Tensor:
    k = torch.randint(modes, (n,), generator=g)
    angle = k.double() * (2 * math.pi / modes)
    centers = torch.stack([torch.cos(angle), torch.sin(angle)], 1)
    return centers + std * torch.randn(n, 2, generator=g, dtype=torch.float64)


@TOYS.register("moons")
def moons(n: int, g: torch.Generator, noise: float = 0.05) -> Tensor:
    upper = torch.rand(n, generator=g) < 0.5
    angle = math.pi * torch.rand(n, generator=g, dtype=torch.float64)
    x = torch.where(upper, torch.cos(angle), 1 - torch.cos(angle))
    y = torch.where(upper, torch.sin(angle), 0.5 - torch.sin(angle))
    pts = torch.stack([x - 0.5, y - 0.25], 1) + noise * torch.randn(n, 2, generator=g, dtype=torch.float64)
    return pts / 0.7


@TOYS.register("swissroll")
def swissroll(n: int, g: torch.Generator, noise: float = 0.3) -> Tensor:
    t = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=g, dtype=torch.float64))
    pts = torch.stack([t * torch.cos(t), t * torch.sin(t)], 1) + noise * torch.randn(
        n, 2, generator=g, dtype=torch.float64
    )
    return pts / 7.5


@TOYS.register("checkerboard")
def checkerboard(n: int, g: torch.Generator) -> Tensor:
    """Uniform on the dark squares of a 4 x 4 board on [-2, 2]^2."""
    x = 4 * torch.rand(n, generator=g, dtype=torch.float64) - 2
    row = torch.randint(0, 2, (n,), generator=g) * 2 + (torch.floor(x) % 2)
    y = row - 2 + torch.rand(n, generator=g, dtype=torch.float64)
    return torch.stack([x, y], 1) / 1.15


def make_toy(name: str, n: int, seed: int = 0) -> Tensor:
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    return TOYS.get(name)(n, torch.Generator().manual_seed(seed))
