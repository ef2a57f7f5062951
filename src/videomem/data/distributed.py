"""Which process of how many this is: the project's one rank / world-size lookup.

The data pipeline splits shards by rank, the PRPO update sums token counts over ranks, validation
agrees on a clip count and the fused loss undoes Liger's division by the world size; all of them ask
``rank_and_world``. It reads, in order: the Lightning ``Trainer`` when one is given, the initialised
``torch.distributed`` process group, and the ``RANK`` / ``WORLD_SIZE`` variables that torchrun sets
before a group exists (one process when none is set). Inside a training step of a multi-process run
the group is initialised, so the answer is the group's.

This module starts, joins and reduces nothing.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import torch.distributed as dist

if TYPE_CHECKING:
    import lightning as L


def rank_and_world(trainer: L.Trainer | None = None) -> tuple[int, int]:
    """(rank, world size) from the Trainer, else torch.distributed, else the RANK / WORLD_SIZE variables."""
    if trainer is not None:
        return trainer.global_rank, trainer.world_size
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
