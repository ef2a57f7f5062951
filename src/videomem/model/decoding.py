"""Decoding pieces of the shared-prefill engine: a KV store that holds each prompt ONCE, the attention
that lets a prompt's samples read it together, and next-token sampling with per-row randomness.

``SharedPrefixStore`` keeps, per text layer, each prompt row's keys/values once in a buffer sized for
prompt + decode (``[B, H_kv, L + G*N, D]``) and appends its G samples' new keys/values after the prompt,
interleaved (step s, sample g at ``L + s*G + g``): nothing is copied G ways, every step writes in place.
The engine hands it to the model's forward as ``kv_store=``, and the text model's attention function
(``model/attention.py``) passes each layer's call to ``SharedPrefixStore.attend``; transformers never
sees a cache object, so the engine depends on no cache class of transformers.

- Prefill (the prompt, many tokens): the keys/values are stored and the attention is the model's own
  implementation (``sdpa`` by default) with the mask transformers builds for it: the prefill is what
  a plain forward computes.
- Decode (one token per live sample): the live samples' queries (and the query heads sharing a KV
  head, as in GQA) are stacked into one ``[B', H_kv, S*r, D]`` block per prompt row, so ONE SDPA call
  per layer reads each row's prompt once per step for all its samples. Finished samples leave the
  batch (``set_active``): the store maps each live sample to its prompt row and to a query slot, and
  a prompt row whose samples all finished leaves the buffers (one copy, once).
- Static layout (the compiled CUDA path): no compaction, a prompt region rounded up to a multiple of
  ``STATIC_BLOCK`` and a full-width mask updated in place, so every decode step has the same shapes.

``sample_next`` is greedy or temperature / nucleus sampling. Its draw is the exponential race
``argmax(p / q)``, q ~ Exp(1), which is how ``torch.multinomial`` draws one sample, with q drawn for
EVERY original row at every step: which numbers a row gets does not depend on which other rows are
still decoding, so compaction changes no sampled token.

It deliberately holds no loop and no model: ``model/generation.py`` drives them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

STATIC_BLOCK = 128  # static layout: prompt region rounded up to this many positions (fewer recompiles)


class SharedPrefixStore:
    """The keys/values of ``B*G`` samples decoded from a ``B``-row prompt, each prompt held once.

    Args:
        prompt_mask: ``[B, L]`` 1 on real prompt tokens, 0 on left padding.
        repeats: Samples per row ``G``; sample g of row b is row ``b*G + g`` (repeat_interleave order).
        max_new_tokens: Decode steps to allocate ``N``.
        heads_per_kv: Query heads per KV head ``r``.
        static: Keep every row in the batch and one full-width mask (fixed shapes, for ``torch.compile``).
    """

    def __init__(
        self, prompt_mask: Tensor, repeats: int, max_new_tokens: int, heads_per_kv: int, static: bool = False
    ) -> None:
        batch, length = prompt_mask.shape
        self.batch, self.repeats, self.heads_per_kv, self.static = batch, repeats, heads_per_kv, static
        # static: left-pad the prompt region to a multiple of STATIC_BLOCK (masked like padding)
        self.offset = (math.ceil(length / STATIC_BLOCK) * STATIC_BLOCK - length) if static else 0
        self.prompt_length = self.offset + length
        self.capacity = self.prompt_length + repeats * max_new_tokens
        self.prompt_real = F.pad(prompt_mask.bool(), (self.offset, 0))  # [B, L']
        self.keys: dict[int, Tensor] = {}  # layer -> [B', H_kv, L' + G*N, D]
        self.values: dict[int, Tensor] = {}
        self.steps = 0  # decode steps written
        self.prefilling = True
        self.live_rows: Tensor | None = None
        self._mask: Tensor | None = None  # built at the first decode step, in the keys' dtype
        self.set_active(torch.arange(batch * repeats, device=prompt_mask.device))

    # ---------------------------------------------------------------- layout of the live samples
    def set_active(self, active: Tensor) -> None:
        """Lay out the live samples ``active`` (sorted original row ids, ``[A]``): the prompt rows they
        need (``live_rows``), each sample's row among them and its query slot; a prompt row none of
        them needs leaves the buffers (one copy)."""
        if self.static and self.live_rows is not None:
            raise RuntimeError("the static layout keeps every row")
        live_rows, row_of = torch.unique(active // self.repeats, return_inverse=True)  # [B'], [A]
        counts = torch.bincount(row_of, minlength=live_rows.numel())  # [B'] live samples per row
        first = torch.cumsum(counts, 0) - counts  # [B'] position in `active` of each row's first sample
        self.active, self.row_of = active, row_of
        self.slot_of = torch.arange(active.numel(), device=active.device) - first[row_of]  # [A]
        self.slots = int(counts.max())  # S
        self.dense = active.numel() == live_rows.numel() * self.slots
        if self.live_rows is not None and self.live_rows.numel() != live_rows.numel():
            keep = torch.searchsorted(self.live_rows, live_rows)
            for layer in self.keys:
                self.keys[layer] = self.keys[layer].index_select(0, keep)
                self.values[layer] = self.values[layer].index_select(0, keep)
        self.live_rows = live_rows
        self._mask = None
        self._set_columns()

    def _decode_mask(self, dtype: torch.dtype) -> Tensor:
        """Additive ``[B', 1, S*r, L' + G*N]``: 0 where query slot ``j*r + h`` may look (its prompt's real
        tokens, its own sample's new tokens at ``L' + s*G + g``), the dtype's minimum elsewhere.
        Padding slots see their prompt (their output is dropped; a row with nothing to see would be NaN).
        The static layout hides every decode column until ``step_mask`` shows it.
        """
        g, length = self.repeats, self.prompt_length
        device = self.prompt_real.device
        sample = torch.full((self.live_rows.numel(), self.slots), -1, dtype=torch.long, device=device)
        sample[self.row_of, self.slot_of] = self.active % g  # [B', S] sample index g of each slot
        column = (torch.arange(self.capacity - length, device=device) % g)[None, None]  # [1, 1, G*N]
        own = (column == sample[..., None]) & (not self.static)  # [B', S, G*N]
        prompt = self.prompt_real[self.live_rows][:, None].expand(-1, self.slots, -1)  # [B', S, L']
        seen = torch.cat([prompt, own], dim=-1).repeat_interleave(self.heads_per_kv, dim=1)  # [B', S*r, K]
        mask = torch.zeros(seen.shape, dtype=dtype, device=device).masked_fill(~seen, torch.finfo(dtype).min)
        return mask[:, None]

    def step_mask(self) -> Tensor:
        """Additive mask of the decode step about to run: ``[B', 1, S*r, L' + G*(s+1)]`` (a view), or
        the whole width in the static layout, where this step's columns become visible here, each to
        its own sample's query rows."""
        if self._mask is None:
            self._mask = self._decode_mask(self.keys[min(self.keys)].dtype)
        end = self.prompt_length + self.repeats * (self.steps + 1)
        if not self.static:
            return self._mask[..., :end]
        block = self._mask[..., end - self.repeats : end]  # [B, 1, G*r, G]
        own = torch.eye(self.repeats, dtype=torch.bool, device=block.device)
        own = own.repeat_interleave(self.heads_per_kv, dim=0)  # [G*r, G]
        block.copy_(torch.zeros_like(block).masked_fill(~own, torch.finfo(block.dtype).min))
        return self._mask

    def _set_columns(self) -> None:
        """``write_columns`` ``[A]``: the buffer column each live sample writes at the next step (a
        tensor, so that a compiled step does not specialise on the step number)."""
        self.write_columns = self.prompt_length + self.steps * self.repeats + self.active % self.repeats

    def advance(self) -> None:
        """After a decode step: one more step written."""
        self.steps += 1
        self._set_columns()

    # ---------------------------------------------------------------- attention
    def attend(self, module: nn.Module, query: Tensor, key: Tensor, value: Tensor, mask, *, base, **kwargs):
        """One layer's attention (``model/attention.py`` calls it): prefill or one decode step."""
        if self.prefilling:
            return self.prefill(module, query, key, value, mask, base=base, **kwargs)
        return self.decode(module, query, key, value, mask, kwargs.get("scaling")), None

    def prefill(self, module: nn.Module, query: Tensor, key: Tensor, value: Tensor, mask, *, base, **kwargs):
        """Store the prompt's keys/values and attend as the model's own implementation ``base`` does."""
        layer = module.layer_idx
        batch, heads, length, dim = key.shape
        buffer_k = key.new_zeros(batch, heads, self.capacity, dim)  # [B, H_kv, L' + G*N, D]
        buffer_v = value.new_zeros(batch, heads, self.capacity, value.shape[-1])
        buffer_k[:, :, self.offset : self.prompt_length] = key
        buffer_v[:, :, self.offset : self.prompt_length] = value
        self.keys[layer], self.values[layer] = buffer_k, buffer_v
        return base(module, query, key, value, mask, **kwargs)

    def decode(self, module: nn.Module, query: Tensor, key: Tensor, value: Tensor, mask: Tensor, scaling):
        """One decode step: write the live samples' new keys/values, then grouped attention.

        Args:
            query: ``[A, H, 1, D]`` this step's queries, H = H_kv * r.
            key, value: ``[A, H_kv, 1, D]`` their new keys/values.
            mask: ``step_mask()``.

        Returns:
            ``[A, 1, H, Dv]``, the layout transformers' attention functions return.
        """
        rows, heads, new, dim = query.shape
        if new != 1 or rows != self.active.numel():
            raise ValueError(
                f"shared-prefix decode takes one token per live sample, got {tuple(query.shape)}"
            )
        layer = module.layer_idx
        buffer_k, buffer_v = self.keys[layer], self.values[layer]
        columns = self.write_columns
        if self.static:  # one block of G columns per row, a tensor index: the same graph every step
            batch = self.live_rows.numel()
            block = key.view(batch, self.repeats, key.shape[1], -1).transpose(1, 2)  # [B, H_kv, G, D]
            buffer_k.index_copy_(2, columns[: self.repeats], block)
            block = value.view(batch, self.repeats, value.shape[1], -1).transpose(1, 2)
            buffer_v.index_copy_(2, columns[: self.repeats], block)
            keys, values = buffer_k, buffer_v
        else:
            buffer_k[self.row_of, :, columns] = key[:, :, 0]  # [A, H_kv, D]
            buffer_v[self.row_of, :, columns] = value[:, :, 0]
            end = self.prompt_length + self.repeats * (self.steps + 1)
            keys, values = buffer_k[:, :, :end], buffer_v[:, :, :end]  # [B', H_kv, K, D] views
        kv_heads = keys.shape[1]
        per_kv = heads // kv_heads
        batch, slots = self.live_rows.numel(), self.slots
        q = query[:, :, 0]  # [A, H, D]
        if not self.dense:  # scatter the live samples into their rows' slots (padding slots stay 0)
            grouped = q.new_zeros(batch * slots, heads, dim)
            grouped[self.row_of * slots + self.slot_of] = q
            q = grouped  # [B'*S, H, D]
        q = q.view(batch, slots, kv_heads, per_kv, dim).transpose(1, 2)  # [B', H_kv, S, r, D]
        q = q.reshape(batch, kv_heads, slots * per_kv, dim)  # [B', H_kv, S*r, D]
        out = F.scaled_dot_product_attention(
            q, keys, values, attn_mask=mask, scale=scaling
        )  # [B', H_kv, S*r, Dv]
        out = out.view(batch, kv_heads, slots, per_kv, -1).transpose(1, 2)  # [B', S, H_kv, r, Dv]
        out = out.reshape(batch * slots, heads, -1)  # [B'*S, H, Dv]
        if not self.dense:
            out = out[self.row_of * slots + self.slot_of]  # [A, H, Dv]
        return out[:, None]  # [A, 1, H, Dv]


def sample_next(
    logits: Tensor,
    do_sample: bool,
    temperature: float,
    top_p: float,
    generator: torch.Generator | None,
    rows: Tensor | None = None,
    num_rows: int | None = None,
) -> Tensor:
    """Next token per row: argmax, or a draw from the temperature / nucleus (top-p) distribution.

    Args:
        logits: ``[A, V]`` next-token logits of the live rows.
        do_sample: False for greedy.
        temperature: Softmax temperature (> 0).
        top_p: Keep the smallest set of tokens whose probability reaches ``top_p``.
        generator: Explicit RNG for reproducible draws (on the logits' device).
        rows: ``[A]`` original row of each live row (None: all rows, in order).
        num_rows: Rows the noise is drawn for every step (default A): each original row gets the same
            numbers whichever rows are live.

    Returns:
        ``[A]`` token ids.
    """
    if not do_sample:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)  # [A, V]
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)  # [A, V]
        drop = sorted_probs.cumsum(dim=-1) - sorted_probs >= top_p  # mass before this token already enough
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)  # [A, V]
    total = num_rows if num_rows is not None else probs.shape[0]
    noise = torch.empty(total, probs.shape[1], dtype=probs.dtype, device=probs.device)
    noise.exponential_(generator=generator)  # [rows, V]: what torch.multinomial(probs, 1) draws
    if rows is not None:
        noise = noise[rows]
    return (probs / noise).argmax(dim=-1)  # [A]
