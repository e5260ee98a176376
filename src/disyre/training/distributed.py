"""Distributed data parallel set-up: ``torchrun`` env:// rendezvous, gloo on CPU, NCCL on CUDA.

A process launched by ``torchrun`` sees ``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` in its
environment; :func:`init_distributed` then joins the process group. A plain ``python`` run is a
world of one and touches nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


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
