"""Evaluation across processes under torchrun: join the launcher's process group, gather shares on rank 0.

``make eval`` under ``torchrun --nproc-per-node N [--nnodes M ...] -m videomem.run_eval ...`` deals
the batches of the split to the ranks in turn (``data.datamodule.EvalStream``, ``chunk``), every rank
runs the loop on its batches, and ``gather_on_zero`` brings each rank's share (records with their
positions, metric counts, skips: plain Python objects) to rank 0, which merges and writes them.
The process group is gloo on the CPU and NCCL on CUDA; objects cross it with the object collectives,
which on NCCL travel through the rank's current GPU (set before the group starts).

Deliberately not here: what is evaluated (``eval/evaluate.py``) or written (``run_eval.py``); training's
process groups belong to Lightning.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from videomem.data.distributed import rank_and_world


@contextlib.contextmanager
def eval_process_group(device: torch.device, timeout_s: float = 3600.0) -> Iterator[tuple[int, int]]:
    """Inside: ``(rank, world size)``; a process group joined for the duration when torchrun started several.

    Args:
        device: This rank's device: CUDA selects NCCL (and becomes the current device), else gloo.
        timeout_s: How long a collective waits for the slowest rank (a rank evaluates its share first).
    """
    if rank_and_world()[1] == 1 or dist.is_initialized():  # one process, or a caller that joined a group
        yield rank_and_world()
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    try:
        yield rank_and_world()
    finally:
        dist.destroy_process_group()


def gather_on_zero(obj: Any) -> list[Any] | None:
    """Every rank's ``obj`` in rank order on rank 0 (None on the others); ``[obj]`` without a group.

    Every rank must call it. The objects are pickled; on NCCL they travel through each rank's current
    GPU (``eval_process_group`` sets it), so ``obj`` should hold CPU tensors only.
    """
    rank, world = rank_and_world()
    if not (dist.is_available() and dist.is_initialized()) or world == 1:
        return [obj]
    parts: list[Any] | None = [None] * world if rank == 0 else None
    dist.gather_object(obj, parts, dst=0)
    return parts
