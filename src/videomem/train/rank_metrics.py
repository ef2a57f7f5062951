"""Training metrics over every rank: sums and counts are all-reduced, then divided.

Under DDP or FSDP each rank sees its own share of the batch; a metric that rank 0 logs from its own
samples describes 1/world of the step, and a mean of the ranks' means weighs a rank with few samples
like one with many. Every metric here is therefore one of:

- a **sum** (samples, prompts, tokens, a rank's share of the global loss): added over ranks;
- a **mean** given as ``(sum, count)``: both added over ranks, logged as sum / count;
- a **max** (wall times: the step waits for its slowest rank): the largest over ranks.

One all-reduce for the sums and counts, one for the maxes, on every rank, once per training step:
every rank must pass the same keys (the keys are sorted, so their order does not matter). Without a
process group the values are this process's.

Deliberately not here: what a metric means (the training modules say which kind each one is) or
validation (torchmetrics objects, synced once per epoch).
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

from videomem.data.distributed import rank_and_world


def reduce_over_ranks(
    sums: dict[str, float] | None = None,
    means: dict[str, tuple[float, float]] | None = None,
    maxes: dict[str, float] | None = None,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """The metrics of the whole step, identical on every rank (a collective when the world is > 1).

    Args:
        sums: name -> this rank's value; logged as the sum over ranks.
        means: name -> (this rank's sum, this rank's count); logged as sum / count over all ranks, left
            out when no rank counted anything.
        maxes: name -> this rank's value; logged as the largest over ranks.
        device: Where the reduced tensors live (the process group's device: CUDA under NCCL).

    Returns:
        name -> value.
    """
    sums, means, maxes = sums or {}, means or {}, maxes or {}
    s_keys, m_keys, x_keys = sorted(sums), sorted(means), sorted(maxes)
    added = [float(sums[k]) for k in s_keys]
    added += [float(means[k][0]) for k in m_keys] + [float(means[k][1]) for k in m_keys]
    total = torch.tensor(added, dtype=torch.float64, device=device)  # [S + 2M]
    peak = torch.tensor([float(maxes[k]) for k in x_keys], dtype=torch.float64, device=device)  # [X]
    if rank_and_world()[1] > 1:
        dist.all_reduce(total)
        dist.all_reduce(peak, op=dist.ReduceOp.MAX)
    total, peak = total.tolist(), peak.tolist()
    out = dict(zip(s_keys, total[: len(s_keys)]))
    n = len(m_keys)
    for k, s, c in zip(m_keys, total[len(s_keys) : len(s_keys) + n], total[len(s_keys) + n :]):
        if c > 0:
            out[k] = s / c
    out.update(zip(x_keys, peak))
    return out


def std_from_moments(mean: float, mean_of_squares: float) -> float:
    """Population standard deviation from E[x] and E[x^2] (each reduced over ranks as a mean)."""
    return math.sqrt(max(0.0, mean_of_squares - mean * mean))
