"""Decoding pieces of the shared-prefill engine: a KV cache copied G ways once, and next-token sampling.

After one prefill of B prompt rows, ``expand_cache`` copies each row's KV ``G`` times into buffers
sized for prompt + decode; every decode step then writes its new key/value in place (a plain
``DynamicCache`` would ``torch.cat`` the whole cache each step). ``sample_next`` is greedy or
temperature / nucleus sampling with an explicit generator.

It deliberately holds no loop and no model: ``policy.Policy.generate`` drives them.
"""

from __future__ import annotations

import torch
from torch import Tensor
from transformers.cache_utils import Cache, DynamicLayer


class _BufferLayer(DynamicLayer):
    """One layer's KV in a buffer allocated once for prompt + decode; ``update`` writes in place."""

    def __init__(self, keys: Tensor, values: Tensor, repeats: int, capacity: int) -> None:
        super().__init__()
        batch, heads, length, _ = keys.shape
        self._k = keys.new_empty(batch * repeats, heads, capacity, keys.shape[-1])  # [B*G, H, C, D]
        self._v = values.new_empty(batch * repeats, heads, capacity, values.shape[-1])  # [B*G, H, C, Dv]
        # Row b's cache goes to rows b*G .. b*G+G-1 (repeat_interleave order) without a temporary copy.
        self._k.view(batch, repeats, heads, capacity, -1)[:, :, :, :length] = keys[:, None]
        self._v.view(batch, repeats, heads, capacity, -1)[:, :, :, :length] = values[:, None]
        self.length = length
        self.dtype, self.device, self.is_initialized = keys.dtype, keys.device, True
        self.keys, self.values = self._k[:, :, :length], self._v[:, :, :length]

    def update(self, key_states: Tensor, value_states: Tensor, *args, **kwargs) -> tuple[Tensor, Tensor]:
        end = self.length + key_states.shape[-2]
        if end > self._k.shape[2]:
            raise RuntimeError(f"KV buffer full ({self._k.shape[2]} positions)")
        self._k[:, :, self.length : end] = key_states
        self._v[:, :, self.length : end] = value_states
        self.length = end
        self.keys, self.values = self._k[:, :, :end], self._v[:, :, :end]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length


def expand_cache(cache: Cache, repeats: int, capacity: int) -> Cache:
    """Copy a prefilled ``[B, ...]`` cache ``repeats`` ways (repeat_interleave order) into fixed buffers.

    Args:
        cache: The prefill cache (``DynamicCache``), ``B`` rows of ``L`` positions.
        repeats: Samples per row ``G``.
        capacity: Positions to allocate (``L + max_new_tokens``).

    Returns:
        A cache of ``B * G`` rows that grows in place up to ``capacity``.
    """
    if any(cache.is_sliding):
        raise NotImplementedError(
            "sliding-window attention layers are not supported by the shared-prefill cache"
        )
    return Cache(layers=[_BufferLayer(layer.keys, layer.values, repeats, capacity) for layer in cache.layers])


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
