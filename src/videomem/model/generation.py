"""Shared-prefill sampling for a policy: each prompt row prefilled once, G samples decoded in place,
finished samples leaving the computation.

``generate`` encodes each distinct clip once (``model/features.py``), prefills every prompt row once
with ``logits_to_keep=1`` while ``SharedPrefixStore`` keeps each row's prompt keys/values once (never
copied ``num_samples`` ways), then decodes the B*G samples in a plain Python loop whose attention reads
each row's prompt once per step for all its samples (``model/decoding.py``). A sample that writes a
stop token leaves the batch: the next forwards run the live samples only, and a prompt row whose
samples are all done leaves the KV buffers (``DecodeStats`` counts the row-steps this saves). Each
sample's randomness is drawn per original row, so the tokens are those of a loop that kept every row.
Text positions continue after the largest 3-D rope position, as HF's ``generate`` places them. Vision
placeholders are never sampled. This is the O(T) instead of O(T*G) prefill behind PRPO's speed-up
(docs/method.md section 3).

``compiled=True`` (for CUDA) keeps every row and a fixed-shape store (``static``) and runs each decode
step through ``torch.compile``: no compaction, no per-step shapes, so one graph serves every step.

It deliberately knows nothing of rewards, memory prompts or training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from videomem.model.attention import install
from videomem.model.decoding import SharedPrefixStore, sample_next
from videomem.model.features import video_encoder_outputs
from videomem.model.inputs import PolicyInputs

if TYPE_CHECKING:
    from videomem.model.policy import Policy


@dataclass
class DecodeStats:
    """Running counts of the engine's work; a caller reads the change over its own calls.

    Attributes:
        prompt_rows: Prompt rows prefilled.
        vision_encodes: Clips run through the vision tower (rows sharing a clip share one encode).
        row_steps: Sample rows computed by decode forwards.
        row_steps_saved: Sample rows a loop over every row until the last one finishes would also
            have computed (finished samples it no longer runs).
    """

    prompt_rows: int = 0
    vision_encodes: int = 0
    row_steps: int = 0
    row_steps_saved: int = 0


def _decode_forward(
    model, token: Tensor, positions: Tensor, mask: Tensor, store: SharedPrefixStore
) -> Tensor:
    """One decode step of the live samples: ``[A, V]`` next-token logits."""
    out = model(input_ids=token, position_ids=positions, attention_mask=mask, use_cache=False, kv_store=store)
    return out.logits[:, -1]


_compiled_decode_forward = None


def _compiled() -> object:
    """``_decode_forward`` through ``torch.compile`` (made once: its graphs are reused across calls)."""
    global _compiled_decode_forward
    if _compiled_decode_forward is None:
        _compiled_decode_forward = torch.compile(_decode_forward, dynamic=False)
    return _compiled_decode_forward


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
    compiled: bool = False,
) -> list[list[list[int]]]:
    """Sample ``num_samples`` completions per prompt row from one shared prefill (``Policy.generate``).

    Args:
        policy: The policy to sample from.
        inputs: Left-padded prompts (``labels`` ignored).
        num_samples: Completions per row ``G``; the prefill runs once per row, the vision tower once
            per distinct clip.
        max_new_tokens: Decode budget per completion.
        do_sample: False for greedy (then all G samples are equal and match HF ``generate``).
        temperature: Sampling temperature.
        top_p: Nucleus sampling mass.
        generator: Explicit RNG (same seed, same samples). One on another device than the model seeds
            a generator on the model's device once per call (one draw), so the noise is drawn there.
        compiled: Static layout and ``torch.compile``d decode steps (CUDA; no compaction).

    Returns:
        ``[B][G]`` completion token ids, cut before the first stop token (``<|im_end|>`` / eos); a
        completion of ``max_new_tokens`` ids met no stop token (it was cut at the budget).
    """
    if do_sample and temperature <= 0:
        raise ValueError("temperature must be > 0 when sampling (use do_sample=False for greedy)")
    model = policy.model
    batch, rows = inputs.input_ids.shape[0], inputs.input_ids.shape[0] * num_samples
    device = inputs.input_ids.device
    text_config = model.config.text_config
    heads_per_kv = text_config.num_attention_heads // text_config.num_key_value_heads
    store = SharedPrefixStore(
        inputs.attention_mask, num_samples, max_new_tokens, heads_per_kv, static=compiled
    )
    step_forward = _compiled() if compiled else _decode_forward
    generator = _on_device(generator, device) if do_sample else None
    stats = policy.decode_stats
    positions, deltas = policy.rope_positions(inputs)  # [3, B, L], [B, 1]
    install(model)  # a no-op unless set_attn_implementation replaced the text attention since
    kwargs = policy._hf_kwargs(inputs)
    kwargs.pop("pixel_values_videos")  # the features come encoded, each distinct clip once
    out = model(
        **kwargs,
        mm_encoder_outputs=video_encoder_outputs(policy, inputs),
        position_ids=positions,
        use_cache=False,
        logits_to_keep=1,
        kv_store=store,
    )
    store.prefilling = False
    stats.prompt_rows += batch
    logits = out.logits[:, -1].repeat_interleave(num_samples, dim=0)  # [B*G, V]
    del out
    # Text continues after the largest prompt position: n_real + delta (= HF's cumsum(mask) - 1 + delta).
    next_pos = (inputs.attention_mask.sum(-1, keepdim=True) + deltas).repeat_interleave(num_samples, dim=0)
    stop_ids = torch.tensor(policy.stop_ids, device=device)
    suppress = torch.tensor(policy.suppress_ids, dtype=torch.long, device=device)
    tokens = torch.full((rows, max_new_tokens), policy.pad_id, dtype=torch.long, device=device)  # [B*G, N]
    active = torch.arange(rows, device=device)  # [A] original rows still decoding
    finished = torch.zeros(rows, dtype=torch.bool, device=device)  # static layout: rows already done
    for step in range(max_new_tokens):
        logits.index_fill_(-1, suppress, float("-inf"))  # no vision placeholders, in place
        token = sample_next(logits, do_sample, temperature, top_p, generator, active, rows)  # [A]
        done = torch.isin(token, stop_ids)  # [A]
        if compiled:  # every row decodes on; a finished one's tokens are padding
            token = token.masked_fill(finished, policy.pad_id)
            done |= finished
            finished = done
        tokens[active, step] = token
        if step == max_new_tokens - 1 or bool(done.all()):
            break
        if not compiled and bool(done.any()):  # finished samples leave the batch
            active, token = active[~done], token[~done]
            store.set_active(active)
        out_logits = step_forward(
            model,
            token[:, None],  # [A, 1]
            (next_pos[active] + step).T.unsqueeze(-1).expand(3, -1, -1),  # [3, A, 1]
            store.step_mask(),
            store,
        )
        store.advance()
        stats.row_steps += active.numel()
        stats.row_steps_saved += rows - active.numel()
        logits = out_logits  # [A, V]
    ids = tokens.tolist()
    return [
        [strip_stop(ids[b * num_samples + g], policy.stop_ids) for g in range(num_samples)]
        for b in range(batch)
    ]


def _on_device(generator: torch.Generator | None, device: torch.device) -> torch.Generator | None:
    """``generator`` if it lives on ``device``, else a generator there seeded by one draw from it."""
    if generator is None or generator.device.type == torch.device(device).type:
        return generator
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return torch.Generator(device=device).manual_seed(seed)


def strip_stop(ids: list[int], stop_ids: list[int]) -> list[int]:
    """``ids`` cut before the first stop token (all of them when none occurs)."""
    for i, t in enumerate(ids):
        if t in stop_ids:
            return ids[:i]
    return ids
