"""Distributed data parallel set-up: ``torchrun`` env:// rendezvous, gloo on CPU, NCCL on CUDA.

A process launched by ``torchrun`` sees ``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` in its
environment; :func:`init_distributed` then joins the process group. A plain ``python`` run is a
world of one and touches nothing.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclass
class DistInfo:
    """Where this process stands in the world.

    Attributes:
        rank: Global rank (0 writes files and logs).
        world_size: Number of processes.
        local_rank: Rank on this machine (selects the GPU).
        owns_group: True when :func:`init_distributed` created the process group.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        """True on the process that writes checkpoints and logs."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """True when gradients must be averaged across processes."""
        return self.world_size > 1


def init_distributed(device: torch.device) -> DistInfo:
    """Join the ``torchrun`` process group if there is one.

    Args:
        device: Device this process computes on (``cuda`` selects NCCL, else gloo).

    Returns:
        The process's :class:`DistInfo` (a world of one outside ``torchrun``).
    """
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(),
                        int(os.environ.get("LOCAL_RANK", dist.get_rank())), False)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, init_method="env://")
    return DistInfo(dist.get_rank(), dist.get_world_size(),
                    int(os.environ.get("LOCAL_RANK", "0")), True)


def local_device(device: torch.device, info: DistInfo) -> torch.device:
    """The device of this rank: ``cuda:LOCAL_RANK`` under DDP on CUDA, else ``device``."""
    if device.type == "cuda" and info.enabled and device.index is None:
        return torch.device("cuda", info.local_rank)
    return device


def all_reduce_mean(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of ``x`` over all ranks (``x`` itself in a world of one)."""
    if not info.enabled:
        return x
    x = x.clone()
    dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x / info.world_size


def barrier(info: DistInfo) -> None:
    """Wait for all ranks (no-op in a world of one)."""
    if info.enabled:
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    """Leave the process group if this module created it."""
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def main_first(fn: Callable[[], T], info: DistInfo) -> T:
    """Run ``fn`` on rank 0 while the other ranks wait, then on the others.

    For work that writes shared files (preparing a cache): rank 0 does it, the others then find
    it done (and only read). If rank 0 fails, the others stop with an error naming the cause
    instead of waiting forever.
    """
    if not info.enabled:
        return fn()
    # a CPU group with a long timeout: preparing a large cohort can outlast NCCL's default
    group = dist.new_group(backend="gloo", timeout=datetime.timedelta(hours=12))
    status: list[str | None] = [None]
    try:
        if info.is_main:
            try:
                out = fn()
            except BaseException as e:
                status[0] = f"{type(e).__name__}: {e}"
                raise
            finally:
                dist.broadcast_object_list(status, src=0, group=group)
            return out
        dist.broadcast_object_list(status, src=0, group=group)
    finally:
        dist.destroy_process_group(group)
    if status[0] is not None:
        raise RuntimeError(f"rank 0 failed ({status[0]})")
    return fn()
