"""Several processes with torchrun: which rank this is, and the few collectives the trainer needs.

    torchrun --nproc_per_node 8 -m ctslice train --cache CACHE --out RUN

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them (a plain `ctslice train`) everything here is a no-op
for one process, so the single-process trainer runs the same code. NCCL on GPUs, gloo on CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    """This process's place in the run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def main(self) -> bool:
        """Rank 0 alone logs and writes checkpoints, history and figures."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str) -> Dist:
    """Join the process group torchrun describes (env://), or a one-process Dist without torchrun."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Dist()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device in ("auto", "cuda") and torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return Dist(dist.get_rank(), dist.get_world_size(), local_rank, backend)


def close_distributed(distributed: Dist) -> None:
    if distributed.enabled and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(distributed: Dist, *tensors: torch.Tensor) -> None:
    """Sum each tensor over all ranks, in place."""
    if distributed.enabled:
        for x in tensors:
            dist.all_reduce(x, op=dist.ReduceOp.SUM)


def any_rank(distributed: Dist, flag: bool, device: torch.device) -> bool:
    """True on every rank when `flag` is true on any (all ranks stop at the same step)."""
    if not distributed.enabled:
        return flag
    x = torch.tensor([int(flag)], device=device)
    dist.all_reduce(x, op=dist.ReduceOp.MAX)
    return bool(x.item())


def gather_rows(distributed: Dist, x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """(world_size, *x.shape): every rank's `x` (equal shapes), on the CPU; (1, ...) for one process."""
    if not distributed.enabled:
        return x[None].cpu()
    parts = [torch.empty_like(x, device=device) for _ in range(distributed.world_size)]
    dist.all_gather(parts, x.to(device))
    return torch.stack([p.cpu() for p in parts])


def broadcast_buffers(distributed: Dist, model: torch.nn.Module) -> None:
    """Rank 0's BatchNorm running statistics on every rank (each rank updated its own during the epoch), so that
    validation on every shard uses the statistics that rank 0's checkpoint holds."""
    if distributed.enabled:
        for b in model.buffers():
            dist.broadcast(b, 0)
