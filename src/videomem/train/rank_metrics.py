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

``rollout_sums_and_means`` says which kind each of a PRPO rollout's statistics is. Deliberately not
here: validation (torchmetrics objects, synced once per epoch).
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

from videomem.data.distributed import rank_and_world
from videomem.rl.rollout import Rollout


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


# the decode engine's ratios (rl/rollout.py) -> the count each divides by (a count: summed over ranks)
DECODE_RATIOS = {
    "decode/row_steps_saved": "decode/row_steps",
    "decode/vision_encodes_per_clip": "decode/clips",
}


def rollout_sums_and_means(rollout: Rollout) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
    """``rollout.stats`` as sums and (sum, count) pairs, to be reduced over ranks (``reduce_over_ranks``).

    ``prompts``, ``samples`` and the judge's ``judge/*`` (requests, cache hits, failures) are counts;
    ``final_answer_accuracy`` is a mean over each question's last-clip samples; the decode engine's
    ratios are weighted by their counts (``DECODE_RATIOS``, the counts summed); the advantage spread is
    rebuilt from the advantages' first two moments; every other statistic is a mean over the rollout's
    samples (tree nodes), so it is weighted by them.
    """
    nodes = rollout.tree.nodes
    n = float(len(nodes))
    sums: dict[str, float] = {}
    means: dict[str, tuple[float, float]] = {}
    stats = dict(rollout.stats)
    for ratio, count in DECODE_RATIOS.items():  # a ratio of the rank's counts: weighted by its count
        if ratio in stats:
            denominator = stats[count]
            means[f"rollout/{ratio}"] = (stats.pop(ratio) * denominator, denominator)
    final_clip: dict[int, int] = {}
    for node in nodes:
        final_clip[node.example_index] = max(final_clip.get(node.example_index, 0), node.clip_index)
    n_last = float(sum(node.clip_index == final_clip[node.example_index] for node in nodes))
    for key, value in stats.items():
        if key in ("prompts", "samples", *DECODE_RATIOS.values()) or key.startswith("judge/"):
            sums[f"rollout/{key}"] = value
        elif key == "final_answer_accuracy":
            means[f"rollout/{key}"] = (value * n_last, n_last)
        elif key != "advantage/std":
            means[f"rollout/{key}"] = (value * n, n)
    means["rollout/advantage/_mean"] = (sum(node.advantage for node in nodes), n)
    means["rollout/advantage/_mean_square"] = (sum(node.advantage**2 for node in nodes), n)
    return sums, means


def prpo_step_metrics(
    rollout: Rollout,
    sums: dict[str, float],
    means: dict[str, tuple[float, float]],
    maxes: dict[str, float],
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """A PRPO step's metrics over all ranks: the rollout's statistics and the update's (``reduce_over_ranks``)."""
    rollout_sums, rollout_means = rollout_sums_and_means(rollout)
    out = reduce_over_ranks({**rollout_sums, **sums}, {**rollout_means, **means}, maxes, device)
    moments = out.pop("rollout/advantage/_mean", 0.0), out.pop("rollout/advantage/_mean_square", 0.0)
    out["rollout/advantage/std"] = std_from_moments(*moments)
    return out
