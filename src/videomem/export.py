"""``videomem export CKPT OUT_DIR``: turn any training checkpoint into a transformers checkpoint dir.

The output (weights as safetensors, ``config.json``, tokenizer with its chat template, the
transformers processor files ``preprocessor_config.json`` / ``video_preprocessor_config.json``, and
``videomem_policy.json`` with the frame geometry the policy was trained with) loads with
``Qwen3VLForConditionalGeneration.from_pretrained`` / ``Qwen2_5_VLForConditionalGeneration.from_pretrained``,
``Policy.from_pretrained``, ``videomem answer --checkpoint`` and the transformers image processor
(``AutoProcessor`` / serving engines where torchvision imports). CKPT may be:

- a saved policy dir (``Policy.save_pretrained``, e.g. ``logs/sft/latest``) or a real Qwen-VL dir:
  loaded and written again (``--dtype`` converts it);
- a Lightning ``.ckpt`` file of a run (DDP / single device, or FSDP with full state dicts): the run's
  ``.hydra/config.yaml`` is found in a parent directory (``<run>/checkpoints/last.ckpt`` ->
  ``<run>/.hydra/config.yaml``), the policy is rebuilt with the configured factory (``cfg.model``:
  for a real model its base checkpoint must be readable here, for the tiny one nothing is needed), its
  frame geometry taken from the run's ``cfg.data``, and the ``policy.``-prefixed entries of
  ``state_dict`` are loaded into it, strictly;
- a sharded checkpoint directory (``torch.distributed.checkpoint``: Lightning's FSDPStrategy with
  ``state_dict_type: sharded`` stores the model under ``model``, ModelParallelStrategy under
  ``state_dict``): the policy is rebuilt the same way and ``dcp.load`` fills its tensors in place,
  without process groups. Only the model entries are read; ``format_utils.dcp_to_torch_save`` would
  also materialise the optimizer states (2x the fp32 weights for AdamW) in one file.

It does not train, evaluate or touch a running job.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from videomem.model.checkpoint import FrameGeometry
from videomem.model.policy import Policy

HYDRA_CONFIG = Path(".hydra") / "config.yaml"
# wrapper names that FSDP1 / activation checkpointing / torch.compile may leave in parameter names
_WRAPPERS = re.compile(r"(_fsdp_wrapped_module|_checkpoint_wrapped_module|_orig_mod)\.")


def find_run_config(ckpt: Path) -> Path:
    """The ``.hydra/config.yaml`` of the run that wrote ``ckpt`` (searched in its parent directories)."""
    for parent in list(ckpt.resolve().parents)[:4]:
        if (parent / HYDRA_CONFIG).is_file():
            return parent / HYDRA_CONFIG
    raise FileNotFoundError(
        f"no {HYDRA_CONFIG} in the parent directories of {ckpt}: cannot rebuild its policy"
    )


def policy_from_run(ckpt: Path) -> Policy:
    """Rebuild the run's policy (architecture, tokenizer, frame geometry) from its Hydra config, no Liger."""
    import hydra
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(find_run_config(ckpt))
    factory = hydra.utils.instantiate(cfg.model)
    policy = factory(liger_kernels=False)
    precision = OmegaConf.select(cfg, "trainer.precision", default=None)  # what evaluation runs it in
    policy.geometry = FrameGeometry.from_data(cfg.get("data"), precision=precision) or policy.geometry
    return policy


def _policy_entries(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    entries = {_WRAPPERS.sub("", k): v for k, v in state.items()}
    entries = {k.removeprefix("policy."): v for k, v in entries.items() if k.startswith("policy.")}
    if not entries:
        raise ValueError("the checkpoint holds no 'policy.' entries (not a videomem training checkpoint?)")
    return entries


def load_lightning_ckpt(policy: Policy, ckpt: Path) -> None:
    """Load the ``policy.`` entries of a single-file Lightning checkpoint into ``policy`` (strict)."""
    # Lightning stores the datamodule's hyperparameters (omegaconf objects) beside the weights, which
    # the weights-only unpickler refuses: export only checkpoints you trust (your own runs).
    state = torch.load(ckpt, map_location="cpu", weights_only=False, mmap=True)["state_dict"]
    policy.load_state_dict(_policy_entries(state), strict=True)


def load_sharded_ckpt(policy: Policy, ckpt: Path) -> None:
    """Fill ``policy`` from a sharded (torch.distributed.checkpoint) Lightning checkpoint directory."""
    import torch.distributed.checkpoint as dcp

    stored = dcp.FileSystemReader(str(ckpt)).read_metadata().state_dict_metadata
    top = next(
        (t for t in ("state_dict", "model") if any(k.startswith(t + ".policy.") for k in stored)), None
    )
    if top is None:
        raise ValueError(f"{ckpt}: no 'state_dict.policy.*' or 'model.policy.*' entries")
    names = {_WRAPPERS.sub("", k): k for k in stored if k.startswith(top + ".")}
    own = policy.state_dict()
    missing = [k for k in own if f"{top}.policy.{k}" not in names]
    if missing:
        raise KeyError(f"{ckpt}: missing {len(missing)} policy tensors, e.g. {missing[:3]}")
    # stored names may carry wrapper prefixes; load under the stored name into our tensors (in place)
    target = {names[f"{top}.policy.{k}"]: v for k, v in own.items()}
    dcp.load(target, storage_reader=dcp.FileSystemReader(str(ckpt)), no_dist=True)


def load_policy(ckpt: str | Path) -> Policy:
    """A Policy with the weights of any checkpoint kind listed in the module docstring."""
    ckpt = Path(ckpt)
    if ckpt.is_dir() and (ckpt / "config.json").is_file():
        return Policy.from_pretrained(ckpt)
    if ckpt.is_dir() and (ckpt / ".metadata").is_file():
        policy = policy_from_run(ckpt)
        load_sharded_ckpt(policy, ckpt)
        return policy
    if ckpt.is_file():
        policy = policy_from_run(ckpt)
        load_lightning_ckpt(policy, ckpt)
        return policy
    raise FileNotFoundError(f"{ckpt}: not a policy dir, a Lightning .ckpt file or a sharded checkpoint dir")


def export(ckpt: str | Path, out_dir: str | Path, dtype: str | None = None) -> Path:
    """Write the policy of ``ckpt`` as a transformers checkpoint dir at ``out_dir``.

    Args:
        ckpt: A policy dir, a Lightning ``.ckpt`` file or a sharded checkpoint dir.
        out_dir: Output directory (created; existing files are overwritten).
        dtype: Convert the weights (e.g. ``"bfloat16"``); None keeps the checkpoint's.

    Returns:
        ``out_dir``.
    """
    policy = load_policy(ckpt)
    if dtype is not None:
        policy.model.to(getattr(torch, dtype))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    policy.save_pretrained(out_dir)
    return out_dir
