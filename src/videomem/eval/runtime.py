"""Where and how a saved policy runs at evaluation: device, dtype and decoding settings.

Shared by ``make eval`` (``run_eval.py``), ``make eval-clips`` (``eval/clip_sweep.py``), ``make
eval-sweep`` (through ``run_eval``) and ``videomem answer``:

- ``resolve_device``: ``auto`` is CUDA when there is one (this rank's GPU under torchrun, from
  ``LOCAL_RANK``), else the CPU; ``cpu``, ``cuda`` and ``cuda:N`` are taken as given;
- ``resolve_dtype``: ``auto`` is float32 off CUDA (bf16 matmuls on a CPU are slow and change the
  numbers), and on CUDA the dtype the policy trained in: the training precision saved beside it
  (``FrameGeometry.precision``: bf16 for ``bf16-mixed`` / ``bf16-true``, float16 for ``16-*``,
  float32 for ``32-true``), else the dtype its weights were saved in (a real Qwen-VL checkpoint's
  bfloat16); an explicit ``float32`` / ``bfloat16`` / ``float16`` wins;
- ``decode_settings``: a decode group's greedy settings (``configs/decode/<name>.yaml``, key ``eval``)
  for the commands that are not Hydra entry points.

Deliberately not here: loading the weights (``model/checkpoint.py``), process groups
(``eval/distributed.py``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from omegaconf import OmegaConf

from videomem import CONFIG_DIR
from videomem.memory.loop import GenerationConfig
from videomem.model.checkpoint import saved_geometry

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(setting: str = "auto") -> torch.device:
    """The device to evaluate on (see the module docstring).

    Raises:
        ValueError: Not a device name, or CUDA asked for where there is none.
    """
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if setting == "auto":
        setting = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(setting)
    except (RuntimeError, TypeError):
        raise ValueError(f"device={setting!r} is not a device: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={setting} but CUDA is not available here: use device=auto or cpu")
        if device.index is None:  # one GPU per rank under torchrun (LOCAL_RANK), else the first
            device = torch.device("cuda", local_rank)
        if device.index >= torch.cuda.device_count():
            raise ValueError(f"device {device} does not exist: {torch.cuda.device_count()} GPU(s) visible")
    return device


def precision_dtype(precision: str | None) -> torch.dtype | None:
    """The weights dtype of a Lightning precision (``bf16-mixed`` -> bfloat16, ...); None when unknown."""
    if precision is None:
        return None
    p = str(precision).lower()
    if p.startswith("bf16"):
        return torch.bfloat16
    if p.startswith("16") or p.startswith("fp16"):
        return torch.float16
    if p.startswith(("32", "64")):
        return torch.float32
    return None


def checkpoint_dtype(ckpt: str | Path | None) -> torch.dtype | None:
    """The dtype the weights at ``ckpt`` were saved in (``config.json``), None when it does not say."""
    config = Path(ckpt) / "config.json" if ckpt is not None else None
    if config is None or not config.is_file():
        return None
    meta = json.loads(config.read_text())
    name = meta.get("dtype") or meta.get("torch_dtype") or meta.get("text_config", {}).get("dtype")
    return DTYPES.get(str(name))


def resolve_dtype(setting: str, device: torch.device, ckpt: str | Path | None = None) -> torch.dtype:
    """The dtype to run the policy at ``ckpt`` in on ``device`` (see the module docstring).

    Raises:
        ValueError: Not ``auto`` or one of ``DTYPES``.
    """
    if setting != "auto":
        if setting not in DTYPES:
            raise ValueError(f"dtype={setting!r}: use auto or one of {list(DTYPES)}")
        return DTYPES[setting]
    if device.type != "cuda":
        return torch.float32
    geometry = saved_geometry(ckpt) if ckpt is not None and Path(ckpt).is_dir() else None
    trained = precision_dtype(geometry.precision) if geometry is not None else None
    return trained or checkpoint_dtype(ckpt) or torch.float32


def load_for_eval(ckpt: str | Path, device: torch.device, dtype: torch.dtype):
    """The saved policy at ``ckpt``, loaded in ``dtype`` (no cast afterwards: the model's own buffers
    stay as transformers builds them), in eval mode on ``device`` (the loop moves each batch there)."""
    from videomem.model.policy import Policy

    return Policy.from_pretrained(ckpt, dtype=dtype).to(device).eval()


def decode_settings(name: str) -> GenerationConfig:
    """The greedy decoding of ``configs/decode/<name>.yaml`` (its ``eval`` key), read, not composed.

    Raises:
        ValueError: No such decode config.
    """
    path = Path(CONFIG_DIR) / "decode" / f"{name}.yaml"
    if not path.is_file():
        names = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ValueError(f"no decode config {name!r}: use one of {names} (configs/decode/)")
    return GenerationConfig(**OmegaConf.to_container(OmegaConf.load(path).eval))
