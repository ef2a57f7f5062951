"""Liger's Triton kernels for the Qwen-VL policy, behind one switch (``build_policy(liger_kernels=...)``).

``resolve_liger("auto")`` is True iff CUDA is available: Liger's Triton kernels fail on CPU ("0 active
drivers"), so every CPU run and test keeps the plain transformers modules. When the switch is on:

- ``apply_liger_kernels(model, arch)`` calls ``liger_kernel.transformers.apply_liger_kernel_to_qwen2_5_vl``
  / ``apply_liger_kernel_to_qwen3_vl`` with ``model=`` the built instance: its RMSNorm modules (and the
  SwiGLU MLPs of Qwen2.5-VL; Liger 0.8.5 has no SwiGLU patch for Qwen3-VL) are swapped in place, and
  the rope functions are replaced. The rope functions and the RMSNorm class are module-level names
  of transformers' modeling file, so the call ALSO changes every model of that arch built later in
  the same process: call it after the model is built, once, and only where CUDA is present.
  Liger's fused-linear-cross-entropy forward is NOT installed (``fused_linear_cross_entropy=False``):
  it replaces ``model.forward``, which generation also uses; SFT instead computes the fused loss
  itself from ``Policy.hidden_states`` and ``Policy.lm_head_weight`` (``videomem.train.sft.sft_loss``),
  as PRPO does with Liger's fused GRPO loss. The policy's ``liger_kernels`` attribute tells SFT to.
- Which transformers the patchers work with (liger-kernel 0.8.5, checked on the CPU: import, patch a
  built model, inspect the replaced modules; docs/performance.md): up to 5.22.2 they import and patch;
  from 5.23 on (the pinned 5.24 included) both raise ImportError on their first line (they import
  ``Qwen2_5_VLCausalLMOutputWithPast`` / ``Qwen3VLCausalLMOutputWithPast``, which 5.23 renamed).
  ``"auto"`` then warns and leaves the modules unpatched (the fused SFT loss is independent and stays
  on); ``True`` raises. ``tests/test_scale_liger.py`` checks whichever holds for the installed version.

This module does not build models; it knows nothing of Lightning.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

PATCHERS = {"qwen2_5_vl": "apply_liger_kernel_to_qwen2_5_vl", "qwen3_vl": "apply_liger_kernel_to_qwen3_vl"}
# What each patcher is asked for: every kernel Liger has for the arch, except the forward replacement.
PATCH_KWARGS = {
    "qwen2_5_vl": {
        "rope": True,
        "rms_norm": True,
        "swiglu": True,
        "cross_entropy": False,
        "fused_linear_cross_entropy": False,
    },
    "qwen3_vl": {
        "rope": True,
        "rms_norm": True,
        "swiglu": False,
        "cross_entropy": False,
        "fused_linear_cross_entropy": False,
    },
}


def resolve_liger(flag: bool | str) -> bool:
    """``"auto"`` -> CUDA available; ``True``/``"true"`` -> True; ``False``/``"false"`` -> False."""
    if isinstance(flag, str):
        value = flag.strip().lower()
        if value == "auto":
            return torch.cuda.is_available()
        if value not in ("true", "false"):
            raise ValueError(f"liger_kernels must be 'auto', true or false, got {flag!r}")
        return value == "true"
    return bool(flag)


def apply_liger_kernels(model: nn.Module, arch: str, *, required: bool) -> bool:
    """Patch ``model`` (a built Qwen-VL) with Liger's kernels; see the module docstring for the scope.

    Args:
        model: The ``*ForConditionalGeneration`` instance.
        arch: ``"qwen2_5_vl"`` or ``"qwen3_vl"``.
        required: Raise (True) or warn and return False (False, the ``"auto"`` case) when the
            installed Liger cannot patch this transformers version.

    Returns:
        True if the patcher ran.
    """
    import liger_kernel.transformers as liger

    patcher = getattr(liger, PATCHERS[arch])
    try:
        patcher(model=model, **PATCH_KWARGS[arch])
    except ImportError as err:
        message = (
            f"liger-kernel cannot patch {arch} with this transformers version ({err}); the model keeps its "
            "own RMSNorm/rope/MLP (set liger_kernels=false to silence this)"
        )
        if required:
            raise RuntimeError(message) from err
        warnings.warn(message, stacklevel=2)
        return False
    return True
