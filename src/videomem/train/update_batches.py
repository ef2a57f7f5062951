"""Which rollout samples a PRPO update trains, and in which micro-batches (method.md section 3).

The update sees the samples that ended with a stop token (overlong filtering), runs those whose
advantage is not zero (their surrogate gradient would be zero), and cuts them into micro-batches that,
for the shared-prefix update, keep each prompt's G completions together. Pure list functions of
``RolloutSample``s, tested in tests/test_prpo_update.py; the module computes no loss and knows no model.
"""

from __future__ import annotations

from videomem.rl.rollout import RolloutSample


def ended_samples(samples: list[RolloutSample], overlong_filter: bool) -> list[RolloutSample]:
    """The samples the update and its normaliser see: all, or (``overlong_filter``) those that ended
    with a stop token (one cut at ``max_new_tokens`` would be trained as if it had ended there)."""
    return [s for s in samples if not (overlong_filter and s.truncated)]


def update_samples(samples: list[RolloutSample], skip_zero_advantage: bool) -> list[RolloutSample]:
    """The samples the update runs: all, or (``skip_zero_advantage``) those whose advantage is not zero."""
    if not skip_zero_advantage:
        return list(samples)
    return [s for s in samples if s.advantage != 0.0]


def trained_completion(sample: RolloutSample) -> str | list[int]:
    """What the update trains: the sampled token ids when the rollout kept them, else the text."""
    return sample.completion_ids if sample.completion_ids is not None else sample.completion


def prompt_groups(samples: list[RolloutSample]) -> list[list[RolloutSample]]:
    """Samples grouped by the prompt they were sampled from (example, clip, carried memory's node)."""
    groups: dict[tuple, list[RolloutSample]] = {}
    for s in samples:
        groups.setdefault((s.example_index, s.clip_index, s.parent_id), []).append(s)
    return list(groups.values())


def micro_batches(
    samples: list[RolloutSample], size: int, whole_groups: bool = False
) -> list[list[RolloutSample]]:
    """Consecutive micro-batches of ``size`` samples; with ``whole_groups`` a prompt group is never split
    (a micro-batch takes whole groups until it holds at least ``size`` samples)."""
    if not whole_groups:
        return [samples[i : i + size] for i in range(0, len(samples), size)]
    chunks: list[list[RolloutSample]] = [[]]
    for group in prompt_groups(samples):
        if len(chunks[-1]) >= size:
            chunks.append([])
        chunks[-1].extend(group)
    return [c for c in chunks if c]
