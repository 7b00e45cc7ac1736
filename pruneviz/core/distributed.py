"""Data parallelism across processes started by ``torchrun`` or ``accelerate launch``.

The heavy commands (adaptive influence, pruning curves) split independent work items (subnetworks to
evaluate, curve steps) over the processes of a launch and gather the results, so that every process
ends up with the same numbers a single process computes. Each item is computed whole by one process
with the same code on the same data, so the gathered numbers are identical, not merely close.

The launchers describe the process group in environment variables (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``); :func:`init` reads them and joins a ``gloo`` group
(gloo exchanges the small Python results on the CPU whatever device the model runs on). Without a
launcher everything here is a no-op for one process of rank 0.

Usage::

    distributed.init()                      # once, at program start
    mine = distributed.shard(items)         # this process's share: items[rank::size]
    everything = distributed.gather(mine)   # every process's shares, rank by rank
    if distributed.is_main(): write(...)    # outputs from rank 0 only
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")
_group = None  # the gloo group the collectives below run in, once :func:`init` has run


@dataclass(frozen=True)
class World:
    """This process's place in a launch.

    Attributes:
        rank: 0-based index of this process (0 = the main process, which writes outputs).
        size: number of processes (1 without a launcher).
        local_rank: index of this process on its machine (picks its GPU).
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0


def launched() -> bool:
    """Whether this process was started by a launcher for more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init() -> World:
    """Join the launch's process group (gloo) if there is one; idempotent.

    Reuses a default group that is already initialised (by accelerate or the caller), adding a gloo
    group beside it when its backend is not gloo (NCCL cannot exchange Python objects on the CPU).

    Returns:
        :func:`world` after joining.
    """
    global _group
    if _group is not None or not launched():
        return world()
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    _group = dist.group.WORLD if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")
    return world()


def world() -> World:
    """This process's rank and the number of processes (``World()`` when :func:`init` has not joined a group)."""
    if _group is None:
        return World()
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def is_main() -> bool:
    """Whether this is the process that writes outputs and prints (rank 0)."""
    return world().rank == 0


def shard(items: list[T]) -> list[T]:
    """This process's share of ``items``: every ``size``-th item from position ``rank`` (round robin)."""
    here = world()
    return items[here.rank :: here.size]


def gather(mine: T) -> list[T]:
    """Every process's ``mine`` (picklable), ordered by rank; ``[mine]`` for one process.

    A collective: every process of the group must call it, in the same order as the others.
    """
    here = world()
    if here.size == 1:
        return [mine]
    everyone: list = [None] * here.size
    dist.all_gather_object(everyone, mine, group=_group)
    return everyone


def unshard(shares: list[list[T]]) -> list[T]:
    """Undo :func:`shard`: interleave the per-rank lists of :func:`gather` back into the original order."""
    merged: list[T] = []
    for position in range(max((len(s) for s in shares), default=0)):
        merged.extend(s[position] for s in shares if position < len(s))
    return merged


def local_device(device: str) -> str:
    """The device this process should use: with several processes on a CUDA machine, ``"auto"`` becomes
    ``cuda:<local rank>`` (one GPU per process); otherwise ``device`` unchanged."""
    here = world()
    if device == "auto" and here.size > 1 and torch.cuda.is_available():
        return f"cuda:{here.local_rank % torch.cuda.device_count()}"
    return device


def shutdown() -> None:
    """Leave the process group (at program end, so that torch does not warn about a leaked group)."""
    global _group
    if _group is not None and dist.is_initialized():
        dist.destroy_process_group()
    _group = None
