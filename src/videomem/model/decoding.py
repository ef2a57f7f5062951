"""Decoding pieces of the shared-prefill engine: a KV cache that holds each prompt ONCE, the attention
that lets G samples read it together, and next-token sampling.

After one prefill of B prompt rows, ``SharedPrefixCache`` keeps each row's prompt keys/values once,
in a buffer sized for prompt + decode, and appends its G samples' new keys/values after the prompt,
interleaved (step s, sample g at ``L + s*G + g``): nothing is copied G ways and every step writes in
place (a plain ``DynamicCache`` would ``torch.cat`` the whole cache each step). During decode the text
model's attention is ``grouped_decode_attention``: the G samples' queries (and the query heads sharing
a KV head, as in GQA) are stacked into one ``[B, H_kv, G*r, D]`` query block, so ONE SDPA call per
layer reads each row's prompt once per step instead of once per sample; an additive mask
``[B, 1, G*r, L + G*N]`` built once per generate shows each sample the prompt's real tokens and its own
new tokens only (tests/perf/test_bench_generate.py measures the decode gain). With G=1 this is plain
GQA-packed decoding over a growing buffer. ``sample_next`` is greedy or temperature / nucleus sampling
with an explicit generator.

It deliberately holds no loop and no model: ``policy.Policy.generate`` drives them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import AttentionInterface, PretrainedConfig
from transformers.cache_utils import Cache, DynamicLayer

GROUPED_DECODE_ATTENTION = "videomem_grouped_decode"


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
    """Next token per row: argmax, or a draw from the temperature / nucleus (top-p) distribution.

    Args:
        logits: ``[N, V]`` next-token logits.
        do_sample: False for greedy.
        temperature: Softmax temperature (> 0).
        top_p: Keep the smallest set of tokens whose probability reaches ``top_p``.
        generator: Explicit RNG for reproducible draws.

    Returns:
        ``[N]`` token ids.
    """
    if not do_sample:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)  # [N, V]
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)  # [N, V]
        drop = sorted_probs.cumsum(dim=-1) - sorted_probs >= top_p  # mass before this token already enough
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)  # [N, V]
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)  # [N]
