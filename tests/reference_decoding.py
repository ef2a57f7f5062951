"""The shared-prefill engine as it was before finished samples left the batch (kept for the tests only).

A copy of ``model/decoding.py`` and ``model/generation.py`` at the version that decoded every one of
the B*G rows until the last finished, with a ``DynamicCache`` prefill and a ``DynamicLayer`` subclass
as the decode cache; ``tests/test_model_decode_engine.py`` checks the engine gives its tokens.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import AttentionInterface, DynamicCache, PretrainedConfig, Qwen3VLForConditionalGeneration
from transformers.cache_utils import Cache, DynamicLayer

from videomem.model.generation import strip_stop

GROUPED_DECODE_ATTENTION = "videomem_reference_grouped_decode"
# transformers renamed the forward's `past_key_values` to `cache` (5.24; the old name goes in 5.40)
_CACHE_ARG = (
    "cache"
    if "cache" in inspect.signature(Qwen3VLForConditionalGeneration.forward).parameters
    else "past_key_values"
)


class _SharedPrefixLayer(DynamicLayer):
    """One layer's KV: ``[B, H_kv, L + G*N, D]``, each row's prompt once, then its samples interleaved."""

    def __init__(self, keys: Tensor, values: Tensor, repeats: int, max_new_tokens: int) -> None:
        super().__init__()
        batch, heads, length, _ = keys.shape
        capacity = length + repeats * max_new_tokens
        self._k = keys.new_empty(batch, heads, capacity, keys.shape[-1])  # [B, H_kv, L+G*N, D]
        self._v = values.new_empty(batch, heads, capacity, values.shape[-1])  # [B, H_kv, L+G*N, Dv]
        self._k[:, :, :length], self._v[:, :, :length] = keys, values  # the one copy of the prompt
        self.prompt_length, self.repeats, self.steps, self.end = length, repeats, 0, length
        self.dtype, self.device, self.is_initialized = keys.dtype, keys.device, True
        self.keys, self.values = self._k[:, :, :length], self._v[:, :, :length]

    def update(self, key_states: Tensor, value_states: Tensor, *args, **kwargs) -> tuple[Tensor, Tensor]:
        """Append one token per sample (``[B*G, H_kv, 1, D]``, repeat_interleave order); return the filled views."""
        rows, heads, new, dim = key_states.shape
        if new != 1:
            raise ValueError(f"the shared-prefix cache decodes one token per step, got {new}")
        end = self.end + self.repeats
        if end > self._k.shape[2]:
            raise RuntimeError(f"KV buffer full ({self._k.shape[2]} positions)")
        batch = rows // self.repeats
        self._k[:, :, self.end : end] = key_states.view(batch, self.repeats, heads, dim).transpose(1, 2)
        self._v[:, :, self.end : end] = value_states.view(batch, self.repeats, heads, -1).transpose(1, 2)
        self.end, self.steps = end, self.steps + 1
        self.keys, self.values = self._k[:, :, :end], self._v[:, :, :end]  # [B, H_kv, L+G*s, D]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.prompt_length + self.steps  # tokens each sample has seen


class SharedPrefixCache(Cache):
    """The decode cache of ``B*G`` samples built from a ``B``-row prefill without copying it ``G`` ways.

    Args:
        prefill: The prefill cache (``DynamicCache``), ``B`` rows of ``L`` positions.
        prompt_mask: ``[B, L]`` 1 on real prompt tokens, 0 on left padding.
        repeats: Samples per row ``G``; sample g of row b is decode row ``b*G + g`` (repeat_interleave order).
        max_new_tokens: Decode steps to allocate ``N``.
        heads_per_kv: Query heads per KV head ``r`` (the mask has a row per sample and query head).
    """

    def __init__(
        self, prefill: Cache, prompt_mask: Tensor, repeats: int, max_new_tokens: int, heads_per_kv: int
    ) -> None:
        if any(prefill.is_sliding):
            raise NotImplementedError(
                "sliding-window attention layers are not supported by the shared-prefix cache"
            )
        layers = [
            _SharedPrefixLayer(layer.keys, layer.values, repeats, max_new_tokens) for layer in prefill.layers
        ]
        super().__init__(layers=layers)
        self.prompt_length, self.repeats = prompt_mask.shape[1], repeats
        self._mask = _decode_mask(prompt_mask, repeats, heads_per_kv, max_new_tokens, layers[0].dtype)

    def next_mask(self) -> Tensor:
        """Additive mask ``[B, 1, G*r, L + G*(s+1)]`` of the next decode step ``s`` (a view, no copy)."""
        return self._mask[..., : self.prompt_length + self.repeats * (self.layers[0].steps + 1)]


def _decode_mask(
    prompt_mask: Tensor, repeats: int, heads_per_kv: int, steps: int, dtype: torch.dtype
) -> Tensor:
    """``[B, 1, G*r, L + G*N]``: 0 where query row ``g*r + j`` may look (real prompt tokens, sample g's own
    new tokens at ``L + s*G + g``), the dtype's minimum elsewhere."""
    batch, length = prompt_mask.shape
    own = torch.eye(repeats, dtype=torch.bool, device=prompt_mask.device).repeat(1, steps)  # [G, N*G]
    seen = torch.cat(
        [prompt_mask.bool()[:, None].expand(batch, repeats, length), own.expand(batch, -1, -1)], dim=-1
    )  # [B, G, L+N*G]
    seen = seen.repeat_interleave(heads_per_kv, dim=1)  # [B, G*r, L+N*G]
    return torch.zeros(seen.shape, dtype=dtype, device=seen.device).masked_fill(
        ~seen, torch.finfo(dtype).min
    )[:, None]


def grouped_decode_attention(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    scaling: float | None = None,
    **kwargs,
) -> tuple[Tensor, None]:
    """HF attention function of one decode step over a ``SharedPrefixCache`` (registered as
    ``GROUPED_DECODE_ATTENTION``): each row's G samples and r query heads per KV head attend as one block.

    Args:
        module: The HF attention module (unused; part of the interface).
        query: ``[B*G, H, 1, D]`` this step's queries, H = H_kv * r.
        key: ``[B, H_kv, K, D]`` a row's prompt and its samples' new tokens (``SharedPrefixCache.update``).
        value: ``[B, H_kv, K, Dv]``.
        attention_mask: ``[B, 1, G*r, K]`` additive (``SharedPrefixCache.next_mask``).
        scaling: Softmax scale (HF passes ``head_dim ** -0.5``).

    Returns:
        ``([B*G, 1, H, Dv], None)``, the layout HF attention functions return.
    """
    rows, heads, new, dim = query.shape
    batch, kv_heads = key.shape[:2]
    if new != 1 or attention_mask is None or rows % batch:
        raise ValueError(
            "grouped decode attention takes one query token per sample and SharedPrefixCache.next_mask()"
        )
    group, per_kv = rows // batch, heads // kv_heads
    q = query.reshape(batch, group, kv_heads, per_kv, dim).transpose(1, 2)  # [B, H_kv, G, r, D]
    q = q.reshape(batch, kv_heads, group * per_kv, dim)  # [B, H_kv, G*r, D]
    out = F.scaled_dot_product_attention(
        q, key, value, attn_mask=attention_mask, scale=scaling
    )  # [B, H_kv, G*r, Dv]
    out = out.view(batch, kv_heads, group, per_kv, -1).transpose(1, 2)  # [B, G, H_kv, r, Dv]
    return out.reshape(rows, 1, heads, -1), None


AttentionInterface.register(GROUPED_DECODE_ATTENTION, grouped_decode_attention)


@contextmanager
def grouped_decode(text_config: PretrainedConfig) -> Iterator[None]:
    """Route the text model's attention to ``grouped_decode_attention`` inside the block (decode only;
    the prefill keeps the configured implementation), restoring it on exit."""
    previous = text_config._attn_implementation
    text_config._attn_implementation = GROUPED_DECODE_ATTENTION
    try:
        yield
    finally:
        text_config._attn_implementation = previous


def sample_next(
    logits: Tensor, do_sample: bool, temperature: float, top_p: float, generator: torch.Generator | None
) -> Tensor:
    """The old draw: ``torch.multinomial`` over the rows given."""
    if not do_sample:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)  # [N, V]
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)  # [N, V]
        drop = sorted_probs.cumsum(dim=-1) - sorted_probs >= top_p
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)  # [N, V]
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)  # [N]


@torch.inference_mode()
def reference_generate(
    policy,
    inputs,
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
        **{_CACHE_ARG: DynamicCache(config=model.config)},
        use_cache=True,
        logits_to_keep=1,
    )
    text_config = model.model.language_model.config
    heads_per_kv = text_config.num_attention_heads // text_config.num_key_value_heads
    # Each row's prompt KV once (not G copies); its samples' tokens are appended after it.
    cache = SharedPrefixCache(
        getattr(out, _CACHE_ARG), inputs.attention_mask, num_samples, max_new_tokens, heads_per_kv
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
                **{_CACHE_ARG: cache},
                use_cache=True,
            )
            logits = out.logits[:, -1]  # [B*G, V]
    ids = tokens.tolist()
    return [
        [strip_stop(ids[b * num_samples + g], policy.stop_ids) for g in range(num_samples)]
        for b in range(batch)
    ]
