"""Shared-prefill sampling for a policy: each prompt row prefilled once, G samples decoded in place.

``generate`` prefills every prompt row once (vision tower once) with ``logits_to_keep=1``, keeps each
row's prompt KV once in a ``SharedPrefixCache`` (never copied ``num_samples`` ways), then decodes all
B*G samples in a plain Python loop whose attention reads each row's prompt once per step for all its
samples (``model/decoding.py``). Text positions continue after the largest 3-D rope position, as HF's
``generate`` places them. Vision placeholders are never sampled. This is the O(T) instead of O(T*G)
prefill behind PRPO's speed-up (docs/method.md section 3).

It deliberately knows nothing of rewards, memory prompts or training.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from transformers import DynamicCache

from videomem.model.decoding import SharedPrefixCache, grouped_decode, sample_next
from videomem.model.inputs import PolicyInputs

if TYPE_CHECKING:
    from videomem.model.policy import Policy


@torch.inference_mode()
def generate(
    policy: Policy,
    inputs: PolicyInputs,
    *,
    num_samples: int = 1,
    max_new_tokens: int = 64,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> list[list[list[int]]]:
    """Sample ``num_samples`` completions per prompt row from one shared prefill (``Policy.generate``).

    Args:
        policy: The policy to sample from.
        inputs: Left-padded prompts (``labels`` ignored).
        num_samples: Completions per row ``G``; the prefill and vision tower run once per row.
        max_new_tokens: Decode budget per completion.
        do_sample: False for greedy (then all G samples are equal and match HF ``generate``).
        temperature: Sampling temperature.
        top_p: Nucleus sampling mass.
        generator: Explicit RNG (same seed, same samples).

    Returns:
        ``[B][G]`` completion token ids, cut before the first stop token (``<|im_end|>`` / eos).
    """
    if do_sample and temperature <= 0:
        raise ValueError("temperature must be > 0 when sampling (use do_sample=False for greedy)")
    model = policy.model
    batch = inputs.input_ids.shape[0]
    rows = batch * num_samples
    device = inputs.input_ids.device
    positions, deltas = policy.rope_positions(inputs)  # [3, B, L], [B, 1]
    out = model(
        **policy._hf_kwargs(inputs),
        position_ids=positions,
        past_key_values=DynamicCache(config=model.config),
        use_cache=True,
        logits_to_keep=1,
    )
    text_config = model.model.language_model.config
    heads_per_kv = text_config.num_attention_heads // text_config.num_key_value_heads
    # Each row's prompt KV once (not G copies); its samples' tokens are appended after it.
    cache = SharedPrefixCache(
        out.past_key_values, inputs.attention_mask, num_samples, max_new_tokens, heads_per_kv
    )
    logits = out.logits[:, -1].repeat_interleave(num_samples, dim=0)  # [B*G, V]
    del out
    # Text continues after the largest prompt position: n_real + delta (= HF's cumsum(mask) - 1 + delta).
    next_pos = inputs.attention_mask.sum(-1, keepdim=True) + deltas  # [B, 1]
    next_pos = next_pos.repeat_interleave(num_samples, dim=0)  # [B*G, 1]
    stop_ids = torch.tensor(policy.stop_ids, device=device)
    suppress = torch.tensor(policy.suppress_ids, dtype=torch.long, device=device)
    tokens = torch.full((rows, max_new_tokens), policy.pad_id, dtype=torch.long, device=device)  # [B*G, N]
    finished = torch.zeros(rows, dtype=torch.bool, device=device)  # [B*G]
    # Decode attention: a row's G samples read its prompt together, in one SDPA call per layer.
    with grouped_decode(text_config):
        for step in range(max_new_tokens):
            logits.index_fill_(-1, suppress, float("-inf"))  # no vision placeholders, in place
            token = sample_next(logits, do_sample, temperature, top_p, generator)  # [B*G]
            token = token.masked_fill(finished, policy.pad_id)
            tokens[:, step] = token
            finished |= torch.isin(token, stop_ids)
            if step == max_new_tokens - 1 or bool(finished.all()):
                break
            out = model(
                input_ids=token[:, None],  # [B*G, 1]
                attention_mask=cache.next_mask(),  # [B, 1, G*r, L+G*(step+1)]
                position_ids=(next_pos + step).unsqueeze(0).expand(3, -1, -1),  # [3, B*G, 1]
                past_key_values=cache,
                use_cache=True,
            )
            logits = out.logits[:, -1]  # [B*G, V]
    ids = tokens.tolist()
    return [
        [strip_stop(ids[b * num_samples + g], policy.stop_ids) for g in range(num_samples)]
        for b in range(batch)
    ]


def strip_stop(ids: list[int], stop_ids: list[int]) -> list[int]:
    """``ids`` cut before the first stop token (all of them when none occurs)."""
    for i, t in enumerate(ids):
        if t in stop_ids:
            return ids[:i]
    return ids
