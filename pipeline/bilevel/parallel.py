"""Data parallelism without wrapping the model: every worker draws the same global batch, keeps
its share, and gradients and losses are averaged across workers before each optimiser step.

With equal shares the average of the workers' mean losses is the mean loss of the global batch,
so ``N`` workers follow the same trajectory as one worker on the global batch (up to the order of
floating-point sums). Outside a ``torch.distributed`` process group (one worker) every function
here is the identity.
"""
from __future__ import annotations

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard(batch: torch.Tensor) -> torch.Tensor:
    """This worker's contiguous share of a global batch ``(B, ...)`` (``B`` divisible by the world)."""
    rank, size = world()
    if size == 1:
        return batch
    per = batch.shape[0] // size
    return batch[rank * per:(rank + 1) * per]


def average_(tensors: list[torch.Tensor]) -> None:
    """Average ``tensors`` in place across workers (gradients before a step)."""
    _, size = world()
    if size == 1:
        return
    for t in tensors:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t.div_(size)


def mean_value(value: float) -> float:
    """The workers' mean of a scalar (losses: logged and checked for finiteness alike everywhere)."""
    _, size = world()
    if size == 1:
        return value
    # NCCL reduces device tensors only
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item()) / size
