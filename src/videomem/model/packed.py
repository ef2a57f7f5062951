"""PRPO's shared-prefix update without a ``[W, W]`` mask: each prompt once, its completions packed
behind it, attended segment by segment.

Row b of the packed batch is ``[left padding, prompt_b, c_b1, ..., c_bG, right padding]`` (width W).
Completion g must see the prompt's real tokens and its own earlier tokens only. ``PackedLayout``
records where the segments lie (O(W) integers, never a mask over W x W) and its ``attend`` runs, per
row and text layer:

- the prompt: one causal SDPA call over its real tokens (no padding inside, so no mask);
- each completion: one SDPA call of its queries over ``[prompt keys, its own keys]`` with a
  lower-right causal bias (``torch.nn.attention.bias.causal_lower_right``): query i sees the whole
  prompt and its own keys up to i. On CUDA the bias is a kernel option (flash / memory-efficient
  attention, no mask tensor); on the CPU torch builds it as one ``[n, L_p + n]`` boolean per call,
  which is the largest mask this update ever holds.

Padding positions get zero attention output (no real token reads them). The result equals the dense
4-D-mask forward to float tolerance (tests/test_prpo_update.py). Each completion's call holds a copy
of the prompt's keys and values (``[prompt, own]`` must be contiguous for the kernels), kept for the
backward pass: ``G * L_p`` key/value rows per layer, which activation checkpointing (the FSDP2
recipe) limits to the layer being recomputed. On CUDA the key/value heads are first repeated to the
query heads (flash takes the lower-right causal bias with equal head counts only); elsewhere SDPA's
grouped-query attention reads them as they are.

It deliberately builds no tensors of the model inputs: ``Policy.group_hidden_states`` does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.attention.bias import causal_lower_right
from torch.nn.functional import scaled_dot_product_attention as sdpa


@dataclass
class PackedLayout:
    """Where each row's prompt and completions lie in the packed batch.

    Attributes:
        prompt_starts: Per row, the first real prompt position (left padding before it).
        prompt_end: End of every row's prompt (the prompts are left padded to one length).
        completions: Per row, ``(start, length)`` of each completion, in order.
    """

    prompt_starts: list[int]
    prompt_end: int
    completions: list[list[tuple[int, int]]]

    def attend(self, module: nn.Module, query: Tensor, key: Tensor, value: Tensor, mask, **kwargs):
        """One text layer's attention over the packed batch (``model/attention.py`` calls it).

        Args:
            query: ``[B, H, W, D]``.
            key, value: ``[B, H_kv, W, D]``.
            mask: The forward's ``[B, 1, 1, W]`` placeholder (``placeholder_mask``), not read: the
                layout is the mask.
            kwargs: ``scaling`` (softmax scale) and whatever else transformers passes (ignored).

        Returns:
            ``([B, W, H, Dv], None)``, the layout transformers' attention functions return.
        """
        scale = kwargs.get("scaling")
        batch, heads, width, _ = query.shape
        gqa = query.device.type != "cuda"
        if not gqa:  # CUDA's flash kernel takes the lower-right causal bias with equal head counts only
            repeat = heads // key.shape[1]
            key, value = key.repeat_interleave(repeat, dim=1), value.repeat_interleave(repeat, dim=1)
        rows = []
        for b in range(batch):
            start, end = self.prompt_starts[b], self.prompt_end
            k_prompt, v_prompt = (
                key[b : b + 1, :, start:end],
                value[b : b + 1, :, start:end],
            )  # [1, H_kv, Lp, D]
            pieces = [query.new_zeros(1, heads, start, value.shape[-1])]  # left padding
            q_prompt = query[b : b + 1, :, start:end]
            pieces.append(sdpa(q_prompt, k_prompt, v_prompt, is_causal=True, scale=scale, enable_gqa=gqa))
            at = end
            for c_start, n in self.completions[b]:
                if c_start != at:
                    raise ValueError("packed completions must follow the prompt and each other")
                k = torch.cat(
                    [k_prompt, key[b : b + 1, :, c_start : c_start + n]], dim=2
                )  # [1, H_kv, Lp+n, D]
                v = torch.cat([v_prompt, value[b : b + 1, :, c_start : c_start + n]], dim=2)
                bias = causal_lower_right(n, k.shape[2])  # query i: the prompt and own keys <= i
                q = query[b : b + 1, :, c_start : c_start + n]
                pieces.append(sdpa(q, k, v, attn_mask=bias, scale=scale, enable_gqa=gqa))
                at += n
            pieces.append(query.new_zeros(1, heads, width - at, value.shape[-1]))  # right padding
            rows.append(torch.cat(pieces, dim=2))  # [1, H, W, Dv]
        return torch.cat(rows).transpose(1, 2).contiguous(), None  # [B, W, H, Dv]

    def placeholder_mask(self, rows: int, width: int) -> Tensor:
        """``[B, 1, 1, W]`` all True: a 4-D mask, which transformers takes as given, so it builds none of
        its own (an eager model would otherwise build a ``[B, 1, W, W]`` one); ``attend`` ignores it."""
        return torch.ones(rows, 1, 1, width, dtype=torch.bool)

    def mask_bytes(self) -> int:
        """The largest attention mask one call of ``attend`` materialises on the CPU, in bytes: one
        ``[n, L_p + n]`` boolean per completion (on CUDA the causal bias is a kernel option: 0)."""
        return max(
            (
                n * (self.prompt_end - start + n)
                for start, cs in zip(self.prompt_starts, self.completions)
                for _, n in cs
            ),
            default=0,
        )
