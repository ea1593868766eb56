"""torch.distributed set-up from torchrun's environment (RANK, LOCAL_RANK, WORLD_SIZE).

Why a tiny module: the engine must run unchanged as one plain process or as N torchrun workers;
everything rank-dependent (device, who logs and writes) is decided here once.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_from_env(backend: str | None = None) -> DistInfo:
    """Join the process group torchrun describes; a plain process gets world size 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    if not dist.is_initialized():
        be = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        dist.init_process_group(backend=be, rank=rank, world_size=world)
        logger.info("joined process group: rank %d/%d (%s)", rank, world, be)
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
    return DistInfo(rank=rank, local_rank=local, world_size=world)


def device_for(info: DistInfo, requested: str = "auto") -> torch.device:
    if requested in ("", "auto"):
        return torch.device(f"cuda:{info.local_rank}" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def barrier(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.barrier()


def all_reduce_mean(value: float, info: DistInfo) -> float:
    """Mean of a scalar over ranks (logged losses are the global ones)."""
    if not info.enabled:
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / info.world_size


def any_true(flag: bool, info: DistInfo) -> bool:
    """True on every rank if it is true on one (all ranks must stop together on a NaN)."""
    if not info.enabled:
        return bool(flag)
    t = torch.tensor([1 if flag else 0], dtype=torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
