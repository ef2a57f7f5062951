"""The Liger switch of ``build_policy``: "auto" is off on CPU and never calls the patcher; on, the right
arch's patcher gets the built instance; SFT's fused cross-entropy path equals the model's own loss.

Liger's Triton kernels cannot run here (no CUDA): the patchers and the fused loss are replaced by
stand-ins with the same signatures.
"""

from __future__ import annotations

import liger_kernel.transformers as liger
import pytest
import torch
from torch import nn
from torch.nn import functional as F
from transformers import Qwen2_5_VLForConditionalGeneration, Qwen3VLForConditionalGeneration

from videomem.model.liger import resolve_liger
from videomem.model.policy import build_policy
from videomem.train.sft import sft_loss

PATCHERS = {"qwen2_5_vl": "apply_liger_kernel_to_qwen2_5_vl", "qwen3_vl": "apply_liger_kernel_to_qwen3_vl"}
CLASSES = {"qwen2_5_vl": Qwen2_5_VLForConditionalGeneration, "qwen3_vl": Qwen3VLForConditionalGeneration}


@pytest.fixture
def calls(monkeypatch) -> list[tuple[str, dict]]:
    """Replace both Liger patchers with recorders."""
    seen: list[tuple[str, dict]] = []
    for arch, name in PATCHERS.items():
        monkeypatch.setattr(liger, name, lambda _arch=arch, **kw: seen.append((_arch, kw)))
    return seen


def test_resolve() -> None:
    assert resolve_liger("auto") is torch.cuda.is_available()
    assert resolve_liger(True) is True and resolve_liger("true") is True
    assert resolve_liger(False) is False and resolve_liger("False") is False
    with pytest.raises(ValueError):
        resolve_liger("sometimes")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU default")
@pytest.mark.parametrize("arch", sorted(PATCHERS))
def test_auto_is_off_on_cpu_and_never_patches(calls, arch: str) -> None:
    policy = build_policy(arch)  # liger_kernels="auto" by default
    assert calls == [] and policy.liger_kernels is False


@pytest.mark.parametrize("arch", sorted(PATCHERS))
def test_true_patches_the_built_instance_of_its_arch(calls, arch: str) -> None:
    policy = build_policy(arch, liger_kernels=True)
    assert len(calls) == 1
    called_arch, kwargs = calls[0]
    assert (
        called_arch == arch and isinstance(kwargs["model"], CLASSES[arch]) and kwargs["model"] is policy.model
    )
    assert kwargs["rms_norm"] and kwargs["rope"] and kwargs["fused_linear_cross_entropy"] is False
    assert kwargs["swiglu"] is (arch == "qwen2_5_vl")  # Liger 0.8.5 has no SwiGLU patch for Qwen3-VL
    assert policy.liger_kernels is True


def test_auto_with_cuda_patches(calls, monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert build_policy("qwen3_vl").liger_kernels is True and [a for a, _ in calls] == ["qwen3_vl"]


def test_incompatible_liger_warns_on_auto_and_raises_on_true(monkeypatch) -> None:
    def broken(**_):
        raise ImportError("cannot import name 'LigerQwen3VLCausalLMOutputWithPast'")

    monkeypatch.setattr(liger, PATCHERS["qwen3_vl"], broken)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.warns(UserWarning, match="cannot patch qwen3_vl"):
        assert build_policy("qwen3_vl").liger_kernels is True  # the fused SFT loss does not need the patch
    with pytest.raises(RuntimeError, match="cannot patch qwen3_vl"):
        build_policy("qwen3_vl", liger_kernels=True)


class TorchFusedCE(nn.Module):
    """Stand-in for ``LigerFusedLinearCrossEntropyLoss``: same call, plain torch (mean over non-ignored)."""

    def forward(self, lin_weight, _input, target, bias=None):
        return F.cross_entropy(_input.float() @ lin_weight.float().T, target, ignore_index=-100)


@pytest.mark.parametrize("arch", sorted(PATCHERS))
def test_fused_sft_loss_equals_the_models_loss(calls, monkeypatch, arch: str) -> None:
    monkeypatch.setattr(liger, "LigerFusedLinearCrossEntropyLoss", TorchFusedCE)
    policy = build_policy(arch, liger_kernels=True)
    size = policy.patch_multiple * 2
    frames = torch.randint(0, 255, (4, size, size, 3), dtype=torch.uint8)
    messages = [
        [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Question: colour?"}]}]
    ] * 2
    inputs = policy.build_inputs(
        messages, [frames, frames], completions=["<memory>red</memory><answer>A</answer>", "x"]
    )
    fused = sft_loss(policy, inputs)
    policy.liger_kernels = False
    assert torch.allclose(fused, sft_loss(policy, inputs), atol=1e-5)


PATCH_CHECK = """
import sys
import liger_kernel.transformers.rms_norm as rms
from videomem.model.liger import apply_liger_kernels
from videomem.model.policy import build_policy
policy = build_policy(sys.argv[1], liger_kernels=False)
assert apply_liger_kernels(policy.model, sys.argv[1], required=True)
norms = [m for m in policy.model.model.language_model.modules() if 'RMSNorm' in type(m).__name__]
assert norms and all(m.forward.__func__ is rms.LigerRMSNorm.forward for m in norms)
"""


@pytest.mark.parametrize("arch", sorted(PATCHERS))
def test_real_patchers_with_the_installed_transformers(arch: str) -> None:
    """The real liger-kernel 0.8.5 patchers, not stand-ins: under transformers <= 5.22 they import and
    patch the built instance (its RMSNorms become Liger's; checked in a subprocess, since the patch also
    replaces module-level names of transformers); from 5.23 on, whose Qwen-VL output classes were
    renamed, they raise ImportError before patching anything, so ``auto`` warns and keeps the model's
    own modules (docs/performance.md, "Liger and transformers")."""
    import subprocess
    import sys

    import transformers
    from packaging.version import Version

    from videomem.model.liger import apply_liger_kernels

    if Version(transformers.__version__) < Version("5.23"):
        subprocess.run([sys.executable, "-c", PATCH_CHECK, arch], check=True)
        return
    policy = build_policy(arch, liger_kernels=False)
    with pytest.warns(UserWarning, match="cannot patch"):
        assert apply_liger_kernels(policy.model, arch, required=False) is False
    with pytest.raises(RuntimeError, match="cannot patch"):
        apply_liger_kernels(policy.model, arch, required=True)
