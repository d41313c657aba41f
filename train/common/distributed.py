"""Data parallelism for every stage under `torchrun --nproc_per_node N` (NCCL on GPUs, gloo on CPU).

Single-process CPU is the default and needs nothing. Under torchrun each rank samples its own
clips (seed + rank), gradients are averaged across ranks before clipping (the same update as one
process with the concatenated batch), random choices that must agree (Self Forcing's exit step)
come from a generator seeded by step only, and only rank 0 writes files.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def init(device: str) -> tuple[int, int]:
    """Join the process group if launched by torchrun; returns (rank, world_size)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
        dist.init_process_group(backend)
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return rank(), world_size()


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def average_gradients(module: torch.nn.Module) -> None:
    """All-reduce (mean) every gradient of `module` across ranks; a no-op in one process."""
    if world_size() == 1:
        return
    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad.div_(world_size())


def broadcast_parameters(module: torch.nn.Module) -> None:
    """Make every rank start from rank 0's weights."""
    if world_size() == 1:
        return
    for tensor in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(tensor.data, src=0)
