"""The process group of an inference job split over the processes ``torchrun`` / ``accelerate launch`` started.

Inference processes share no tensors: each one scores its own chunks with its own copy of the model. The group
only carries small flags between them (did any process fail? has everyone arrived?), so it is a gloo group on
the CPU whatever the device; the model may sit on a GPU. A process that runs alone (no ``WORLD_SIZE`` > 1 in
its environment) starts no group.
"""

from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist

DEFAULT_TIMEOUT_S = 2 * 3600


def launched_world() -> tuple[int, int, int]:
    """``(rank, world, local_rank)`` from the launcher's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``);
    ``(0, 1, 0)`` for a plain process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    return rank, world, local_rank


def start_group(timeout_s: float | None = None) -> bool:
    """Join the launcher's process group (gloo, env:// rendezvous: ``MASTER_ADDR``, ``MASTER_PORT``); ``False``
    when this process runs alone. ``timeout_s`` (default ``GENOLM_WORKERS_TIMEOUT`` or two hours) bounds every
    wait: a process that waits longer for the others raises instead of hanging."""
    _rank, world, _local = launched_world()
    if world <= 1:
        return False
    if dist.is_available() and dist.is_initialized():
        return True
    if timeout_s is None:
        timeout_s = float(os.environ.get("GENOLM_WORKERS_TIMEOUT", DEFAULT_TIMEOUT_S))
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=timeout_s))
    return True


def max_over_group(value: int) -> int:
    """The largest ``value`` over all processes (every process must call it); ``value`` when alone."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    flag = torch.tensor([value], dtype=torch.int64)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return int(flag.item())


def sum_over_group(values: list[int]) -> list[int]:
    """Element-wise sums of ``values`` over all processes; ``values`` when alone."""
    if not (dist.is_available() and dist.is_initialized()):
        return list(values)
    tensor = torch.tensor(values, dtype=torch.int64)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return [int(v) for v in tensor.tolist()]


def close_group() -> None:
    """Leave the process group, if any."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


__all__ = ["close_group", "launched_world", "max_over_group", "start_group", "sum_over_group"]
