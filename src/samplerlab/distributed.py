"""torch.distributed helpers, in one place: rank, world size, joining the process group, sharding
seeds or cells over ranks and gathering results back into seed order.

Everything works unchanged without a process group (one process: rank 0 of a world of 1). Launch with
``torchrun`` (gloo on CPU, NCCL on GPU); samplerlab writes no cluster code of its own.
"""

from __future__ import annotations

import os
from typing import Sequence, TypeVar

import torch
from torch import Tensor

__all__ = [
    "rank",
    "world_size",
    "rank_and_world",
    "init_from_env",
    "barrier",
    "shard",
    "gather",
    "all_reduce_mean",
    "local_device",
]

T = TypeVar("T")


def _active() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) under torch.distributed, else (0, 1)."""
    import torch.distributed as dist

    return (dist.get_rank(), dist.get_world_size()) if _active() else (0, 1)


def rank() -> int:
    return rank_and_world()[0]


def world_size() -> int:
    return rank_and_world()[1]


def init_from_env() -> None:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1): gloo on CPU, NCCL on GPU."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")


def barrier() -> None:
    if _active():
        import torch.distributed as dist

        dist.barrier()


def shard(items: Sequence[T]) -> list[T]:
    """This process's share of ``items`` (every world-th, from its rank); all of them without a group."""
    r, w = rank_and_world()
    return list(items)[r::w]


def gather(x: Tensor, seeds: Sequence) -> Tensor:
    """Reassemble per-rank results of ``shard(seeds)`` into seed order (identity without a group)."""
    if not _active():
        return x
    import torch.distributed as dist

    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, x.cpu())
    out = torch.empty(len(seeds), *x.shape[1:], dtype=x.dtype)
    for r, part in enumerate(parts):
        out[r :: len(parts)] = part
    return out


def all_reduce_mean(value: Tensor) -> Tensor:
    """The mean of ``value`` over the ranks (a copy; ``value`` itself without a group)."""
    if not _active():
        return value
    import torch.distributed as dist

    value = value.detach().clone()
    dist.all_reduce(value)
    return value / dist.get_world_size()


def local_device(name: str | None = None) -> str:
    """The given device, else cuda when available; under torchrun, cuda means this rank's GPU (LOCAL_RANK)."""
    device = name or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and _active():
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        torch.cuda.set_device(device)
    return device
