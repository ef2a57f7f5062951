"""``backward_sync`` (train/parallel.py): under FSDP2 every backward reduce-scatters into the sharded
gradients, so no rank holds unsharded fp32 gradients between micro-batches (docs/performance.md,
"Gradient accumulation"). One process, a gloo group of one, an FSDP2-sharded linear layer (< 1 s)."""

from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import fully_shard

from videomem.train.parallel import backward_sync


def test_fsdp2_micro_batches_reduce_into_the_shards(tmp_path) -> None:
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        policy = fully_shard(nn.Linear(4, 3))
        module = SimpleNamespace(policy=policy, _trainer=None)
        for _ in range(2):  # two micro-batches that are not the step's last
            with backward_sync(module, enabled=False):
                policy(torch.ones(2, 4)).sum().backward()
        # reduced in each backward: the sharded .grad holds both micro-batches' sum (2 x 2 rows of ones)
        assert all(p.grad is not None for p in policy.parameters())
        assert torch.equal(policy.weight.grad.full_tensor(), torch.full((3, 4), 4.0))
    finally:
        dist.destroy_process_group()
