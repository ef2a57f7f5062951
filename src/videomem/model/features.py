"""Vision features once per clip: the rows of a batch that show the same clip share one encode.

A clip's vision features do not depend on the text around it, yet several prompt rows often show the
same clip: the K carried memories of a rollout tree, the G independent chains of ``psp=false``, the
greedy continuation chains of ``answer_target=continuation``, questions about one video. Rows built
from the same clip object (``PolicyInputs.sources``) share one pass of the vision tower here, and
inside ``shared_vision(policy)`` (a rollout: the weights do not change) a clip encoded by an earlier
call is not encoded again. The features reach the model through transformers' ``mm_encoder_outputs``
argument: per row the merged tokens (``pooler_output``) and, for Qwen3-VL, the deepstack features of
its chosen vision blocks, which the text model adds to its first layers.

It deliberately caches nothing outside ``shared_vision`` and never under gradients.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from videomem.model.inputs import PolicyInputs
    from videomem.model.policy import Policy

_TEMPLATE = "encoder output"  # cache key of the last output object (never an id)


@contextmanager
def shared_vision(policy: Policy) -> Iterator[None]:
    """Inside the block, a clip (the same object) is encoded at most once by the policy's
    inference forwards; on exit the features are dropped. Only where the weights do not change."""
    previous = policy.vision_cache
    policy.vision_cache = {} if previous is None else previous
    try:
        yield
    finally:
        policy.vision_cache = previous


def video_encoder_outputs(policy: Policy, inputs: PolicyInputs) -> dict:
    """``mm_encoder_outputs`` for the batch: each distinct clip through the vision tower once.

    Args:
        policy: Its ``model.model.get_video_features`` encodes; ``decode_stats.vision_encodes`` counts.
        inputs: One video per row; rows whose ``sources`` entry is the same object share features.

    Returns:
        ``{"video": out}`` with ``out.pooler_output`` one ``[n_b, H]`` per row (and, for Qwen3-VL,
        ``out.deepstack_features`` per deepstack layer one ``[n_b, H]`` per row).
    """
    grid = inputs.video_grid_thw  # [B, 3]
    sizes = grid.prod(-1).tolist()  # patches per row
    starts = [sum(sizes[:b]) for b in range(len(sizes))]
    sources = inputs.sources or tuple(object() for _ in sizes)  # unknown sources: every row its own
    cache = policy.vision_cache if policy.vision_cache is not None and not torch.is_grad_enabled() else {}
    first: dict[int, int] = {}  # id(source) -> first row showing it
    for b, source in enumerate(sources):
        first.setdefault(id(source), b)
    todo = [b for key, b in first.items() if key not in cache]
    if todo:
        pixels = torch.cat([inputs.pixel_values_videos[starts[b] : starts[b] + sizes[b]] for b in todo])
        out = policy.model.model.get_video_features(pixels, grid[todo], return_dict=True)
        deepstack = getattr(out, "deepstack_features", None)
        for k, b in enumerate(todo):
            layers = None if deepstack is None else [layer[k] for layer in deepstack]
            cache[id(sources[b])] = (sources[b], out.pooler_output[k], layers)  # the source kept alive
        cache[_TEMPLATE] = out
        policy.decode_stats.vision_encodes += len(todo)
    rows = [cache[id(s)] for s in sources]
    shared = copy.copy(cache[_TEMPLATE])  # the model's own output type, its fields replaced
    shared.pooler_output = tuple(r[1] for r in rows)
    if rows[0][2] is not None:
        shared.deepstack_features = [tuple(r[2][i] for r in rows) for i in range(len(rows[0][2]))]
    return {"video": shared}
