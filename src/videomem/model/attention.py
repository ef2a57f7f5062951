"""The text model's attention, routed through one function that knows the engine's two layouts.

``install(model)`` registers, through transformers' public ``AttentionInterface`` /
``AttentionMaskInterface``, a function named ``videomem_<implementation>`` and switches the text model
to it with the public ``set_attn_implementation`` (the vision tower keeps its own). A forward that
passes neither keyword below gets exactly the implementation the model had (``sdpa`` by default) and
the masks transformers builds for it, so training, evaluation and HF ``generate`` see no change. Two
keyword arguments of the model's forward, which transformers hands on to attention functions, select
the engine's own attention:

- ``kv_store=`` (``model/decoding.py``): the shared-prefill decode engine (prefill into a store that
  holds each prompt once, grouped decode over it);
- ``packed_layout=`` (``model/packed.py``): PRPO's shared-prefix update, each prompt once with its G
  completions packed behind it, attended segment by segment without a ``[W, W]`` mask.

The switch is made once, when the policy is built, and stays: a gradient-checkpointed layer that
recomputes its forward in the backward pass gets the same function. So the project depends on no
private transformers class or attribute to run either layout.

It deliberately holds no layout of its own.
"""

from __future__ import annotations

import functools
import inspect

from torch import Tensor, nn
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

PREFIX = "videomem_"


def _attention(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    *args,
    base: str,
    kv_store=None,
    packed_layout=None,
    **kwargs,
):
    """The registered function: the engine's layout when a forward passes one, else ``base``."""
    if kv_store is not None:
        return kv_store.attend(
            module, query, key, value, attention_mask, base=base_function(module, base), **kwargs
        )
    if packed_layout is not None:
        return packed_layout.attend(module, query, key, value, attention_mask, **kwargs)
    return base_function(module, base)(module, query, key, value, attention_mask, *args, **kwargs)


def base_function(module: nn.Module, base: str):
    """The attention function of implementation ``base`` (``eager`` is each modeling file's own)."""
    if base in ALL_ATTENTION_FUNCTIONS:
        return ALL_ATTENTION_FUNCTIONS[base]
    return inspect.getmodule(type(module)).eager_attention_forward


def install(model: nn.Module) -> None:
    """Route ``model``'s text attention through ``_attention`` (idempotent; the model's implementation,
    e.g. ``sdpa``, stays the one plain forwards use)."""
    base = model.config.text_config._attn_implementation  # read only: set through set_attn_implementation
    if base.startswith(PREFIX):
        return
    name = PREFIX + base
    if name not in ALL_ATTENTION_FUNCTIONS:
        AttentionInterface.register(name, functools.partial(_attention, base=base))
        if base in ALL_MASK_ATTENTION_FUNCTIONS:  # the masks of plain forwards, as for base
            AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[base])
    model.set_attn_implementation({"text_config": name})


def base_implementation(model: nn.Module) -> str:
    """The implementation plain forwards of ``model``'s text model use (``sdpa``, ``eager``, ...)."""
    return model.config.text_config._attn_implementation.removeprefix(PREFIX)
