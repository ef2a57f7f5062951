"""Save / load a policy as a transformers checkpoint dir, the ``build_policy`` factory, Liger wrapping.

A saved dir holds the weights and ``config.json`` (loadable by ``Qwen2_5_VLForConditionalGeneration`` /
``Qwen3VLForConditionalGeneration.from_pretrained``), the tokenizer with its chat template, the
transformers processor files (``model/processor_files.py``, so AutoProcessor and serving engines load
it) and ``videomem_policy.json``: the vision geometry and normalisation, the system prompt, and the
frame geometry the policy was trained with (``FrameGeometry``: frame height and width, frames per
clip, clips when known, and the training precision), which ``saved_geometry`` reads without loading
the model, so that evaluation and ``videomem answer`` decode frames as the policy saw them in
training, and run it in the dtype it trained in.

Loading also accepts a real Qwen-VL checkpoint dir (chat template beside the tokenizer, normalisation
from its preprocessor config). Nothing is ever downloaded.

``frame_patcher`` reads, without building the model, the frames -> patches transform the built policy
will want (the datamodule's ``transform``, run in the loader workers).

It deliberately runs no model: ``policy.Policy`` holds the forward and delegates save / load here.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from transformers import AutoConfig, AutoTokenizer, GenerationConfig

from videomem.model.liger import apply_liger_kernels, resolve_liger
from videomem.model.policy import MODEL_CLASSES, POLICY_FILE, Policy
from videomem.model.processor_files import IMAGE_FILE, VIDEO_FILE, processor_configs
from videomem.model.tiny import EOS, PAD, build_tokenizer, tiny_config
from videomem.model.vision import NORM, FramePatcher
from videomem.model.weights import parameters_on_meta

__all__ = ["MODEL_CLASSES", "POLICY_FILE", "FrameGeometry", "build_policy", "frame_patcher", "saved_geometry"]


@dataclass(frozen=True)
class FrameGeometry:
    """The frames a policy was trained on (the data config's ``frame_size`` and ``frames_per_clip``),
    and the precision it was trained in.

    Attributes:
        height: Frame height in pixels (a multiple of the policy's ``patch_multiple``).
        width: Frame width in pixels.
        frames_per_clip: Frames sampled from every clip.
        clips: Clips per video T, when known (the shards fix it, not the data config); else None.
        precision: The Lightning precision of the training run (``"32-true"``, ``"bf16-mixed"``, ...);
            None: unknown. Evaluation on a GPU runs the policy in its dtype (``eval/runtime.py``).
    """

    height: int
    width: int
    frames_per_clip: int
    clips: int | None = None
    precision: str | None = None

    def __post_init__(self) -> None:
        for name in ("height", "width", "frames_per_clip"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
                raise ValueError(f"FrameGeometry.{name} must be a positive int, got {getattr(self, name)!r}")
        if self.clips is not None and (not isinstance(self.clips, int) or self.clips <= 0):
            raise ValueError(f"FrameGeometry.clips must be a positive int or None, got {self.clips!r}")
        if self.precision is not None and not isinstance(self.precision, str):
            raise ValueError(f"FrameGeometry.precision must be a string or None, got {self.precision!r}")

    @property
    def frame_size(self) -> tuple[int, int]:
        """``(H, W)``, as the data config's ``frame_size``."""
        return (self.height, self.width)

    @classmethod
    def from_data(
        cls, data: Any, clips: int | None = None, precision: str | int | None = None
    ) -> FrameGeometry | None:
        """From a ``VideoQADataModule`` or a data config (``frame_size`` [H, W], ``frames_per_clip``),
        and the run's ``trainer.precision``.

        Returns None when the data keeps the stored frame size (``frame_size: null``).
        """
        size = getattr(data, "frame_size", None)
        frames = getattr(data, "frames_per_clip", None)
        if frames is None and hasattr(data, "hparams"):  # a LightningDataModule keeps it in hparams
            frames = data.hparams.get("frames_per_clip")
        if size is None or frames is None:
            return None
        height, width = (int(s) for s in size)
        return cls(height, width, int(frames), clips, None if precision is None else str(precision))

    @classmethod
    def from_dict(cls, d: dict) -> FrameGeometry:
        """Inverse of ``dataclasses.asdict``; a clear error on a malformed entry."""
        try:
            return cls(
                int(d["height"]),
                int(d["width"]),
                int(d["frames_per_clip"]),
                d.get("clips"),
                d.get("precision"),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"malformed frame geometry {d!r}: {err}") from None


def saved_geometry(path: str | Path) -> FrameGeometry | None:
    """The frame geometry saved with the policy at ``path`` (a saved dir); None if none was recorded.

    Reads ``videomem_policy.json`` only (no weights). A real Qwen-VL dir, or a policy saved before the
    geometry was recorded, gives None: the caller keeps its own frame size.
    """
    meta_file = Path(path) / POLICY_FILE
    if not meta_file.is_file():
        return None
    geometry = json.loads(meta_file.read_text()).get("geometry")
    if geometry is None:
        return None
    try:
        return FrameGeometry.from_dict(geometry)
    except ValueError as err:
        raise ValueError(f"{meta_file}: {err}") from None


def save_policy(
    policy: Policy,
    path: str | Path,
    state_dict: dict[str, Tensor] | None = None,
    *,
    geometry: FrameGeometry | None = None,
) -> None:
    """``Policy.save_pretrained``: model, tokenizer (with chat template), processor files, metadata.

    Args:
        policy: The policy to save.
        path: Output directory.
        state_dict: Full weights keyed as ``policy.state_dict()`` (``model.`` prefix), e.g. gathered
            from a sharded policy; None saves the module's own weights.
        geometry: Frame geometry it was trained with; None keeps ``policy.geometry``. Given, it also
            becomes ``policy.geometry``.
    """
    path = Path(path)
    if geometry is not None:
        policy.geometry = geometry
    if state_dict is not None:
        state_dict = {k.removeprefix("model."): v for k, v in state_dict.items()}
    policy.model.save_pretrained(path, state_dict=state_dict)
    policy.tokenizer.save_pretrained(path)
    for name, config in processor_configs(policy).items():
        (path / name).write_text(json.dumps(config, indent=2))
    meta = {
        "arch": policy.arch,
        "patch_size": policy.patch_size,
        "temporal_patch_size": policy.temporal_patch_size,
        "merge_size": policy.merge_size,
        "image_mean": list(policy.image_mean),
        "image_std": list(policy.image_std),
        "system_prompt": policy.system_prompt,
        "geometry": None if policy.geometry is None else asdict(policy.geometry),
    }
    (path / POLICY_FILE).write_text(json.dumps(meta, indent=2))


def load_policy(
    cls: type[Policy], path: str | Path, dtype: torch.dtype | str | None = None, weights: bool = True
) -> Policy:
    """``Policy.from_pretrained``: our save or a real Qwen2.5-VL / Qwen3-VL dir (``model_type`` picks).

    Args:
        cls: ``Policy`` (or a subclass) to build.
        path: Local directory (never downloads).
        dtype: Weights dtype; None keeps the checkpoint's.
        weights: False: build the model from the checkpoint's config with its parameters on the meta
            device and read no weight (``model/weights.py``: sharded training fills each rank's shards).
    """
    path = Path(path)
    arch = json.loads((path / "config.json").read_text()).get("model_type")
    if arch not in MODEL_CLASSES:
        raise ValueError(f"{path}: model_type {arch!r} is not one of {list(MODEL_CLASSES)}")
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    if weights:
        model = MODEL_CLASSES[arch].from_pretrained(path, dtype=dtype or "auto", local_files_only=True)
    else:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
        with parameters_on_meta():
            model = MODEL_CLASSES[arch]._from_config(config, dtype=dtype or config.dtype or torch.float32)
        if (path / "generation_config.json").is_file():
            model.generation_config = GenerationConfig.from_pretrained(path, local_files_only=True)
        model.eval()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if tokenizer.chat_template is None:
        tokenizer.chat_template = _find_chat_template(path)
    meta = json.loads((path / POLICY_FILE).read_text()) if (path / POLICY_FILE).exists() else {}
    mean, std = meta.get("image_mean"), meta.get("image_std")
    if mean is None:
        mean, std = _processor_norm(path)
    policy = cls(model, tokenizer, arch, image_mean=mean, image_std=std)
    policy.system_prompt = meta.get("system_prompt")
    policy.geometry = saved_geometry(path)
    return policy


def _find_chat_template(path: Path) -> str:
    """A real checkpoint's template may live beside the tokenizer (chat_template.jinja / .json)."""
    if (path / "chat_template.jinja").exists():
        return (path / "chat_template.jinja").read_text()
    if (path / "chat_template.json").exists():
        return json.loads((path / "chat_template.json").read_text())["chat_template"]
    raise ValueError(f"{path}: the tokenizer has no chat template")


def _processor_norm(path: Path) -> tuple[list[float] | None, list[float] | None]:
    """image_mean / image_std from a real checkpoint's (video) preprocessor config, else None (arch default)."""
    for name in (VIDEO_FILE, IMAGE_FILE):
        if (path / name).exists():
            cfg = json.loads((path / name).read_text())
            if "image_mean" in cfg:
                return cfg["image_mean"], cfg["image_std"]
    return None, None


def build_policy(
    arch: str = "qwen2_5_vl",
    path: str | None = None,
    tiny: dict | None = None,
    dtype: str = "float32",
    seed: int = 0,
    liger_kernels: bool | str = "auto",
    system_prompt: str | None = None,
    weights: bool = True,
    compile_decode: bool = False,
) -> Policy:
    """Factory for Lightning's ``configure_model`` (Hydra ``_partial_``).

    Args:
        arch: ``"qwen2_5_vl"`` or ``"qwen3_vl"``; must match the checkpoint when ``path`` is given.
        path: Local checkpoint dir (a real Qwen-VL or a ``Policy.save_pretrained`` dir); None builds
            a tiny random model.
        tiny: Overrides of ``tiny.TINY_DEFAULTS`` (ignored with ``path``).
        dtype: Weights dtype name (``"float32"``, ``"bfloat16"``, ...).
        seed: Seed of the tiny model's random init (the global RNG is left untouched).
        liger_kernels: ``"auto"`` (on iff CUDA is available), True or False: Liger's Triton kernels
            patched into the built instance, and Liger's fused cross-entropy for SFT (``model/liger.py``).
        system_prompt: The step instruction this policy is trained and run with, saved with it (None:
            keep the checkpoint's, else the memory loop's default; "": no system turn).
        weights: With ``path``, False leaves the parameters on the meta device, unread, and records
            the dir in ``policy.weights_dir``: sharded training allocates each rank's shards and reads
            only those (``train/parallel.py``). A tiny random model is always built whole.
        compile_decode: Decode steps through ``torch.compile`` with a static layout (for CUDA; finished
            samples then stay in the batch, ``model/generation.py``).
    """
    torch_dtype = getattr(torch, dtype)
    if path is not None:
        if not Path(path).is_dir():
            raise FileNotFoundError(
                f"model path {path!r} is not a local checkpoint directory (nothing is downloaded): point "
                "model.path (or the environment variable the config reads) at a Qwen-VL checkpoint dir"
            )
        policy = load_policy(Policy, path, dtype=torch_dtype, weights=weights)
        policy.weights_dir = None if weights else Path(path)
        if policy.arch != arch:
            raise ValueError(f"checkpoint {path} is {policy.arch!r} but arch={arch!r} was requested")
        if system_prompt is not None:
            policy.system_prompt = system_prompt
        policy.compile_decode = compile_decode
        return _with_liger(policy, liger_kernels)
    tokenizer = build_tokenizer((tiny or {}).get("vocab_size", 768))
    config = tiny_config(arch, tokenizer, tiny)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MODEL_CLASSES[arch](config)
    model.generation_config.eos_token_id = [
        tokenizer.convert_tokens_to_ids(EOS),
        tokenizer.convert_tokens_to_ids(PAD),
    ]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = None
    policy = Policy(model.to(torch_dtype).eval(), tokenizer, arch)
    policy.system_prompt = system_prompt
    policy.weights_dir = None
    policy.compile_decode = compile_decode
    return _with_liger(policy, liger_kernels)


def _with_liger(policy: Policy, flag: bool | str) -> Policy:
    """Patch the built instance (never the classes before building: see ``model/liger.py``)."""
    if resolve_liger(flag):
        apply_liger_kernels(policy.model, policy.arch, required=flag is True or str(flag).lower() == "true")
        policy.liger_kernels = True
    return policy


def frame_patcher(
    arch: str = "qwen2_5_vl", path: str | None = None, tiny: dict | None = None
) -> FramePatcher:
    """The frames -> patches transform of the policy ``build_policy(arch, path, tiny)`` builds, read
    from its configs without building it: the datamodule's ``transform`` (Hydra passes the model
    config's ``arch``, ``path`` and ``tiny``), run in the loader workers.

    Args:
        arch: ``"qwen2_5_vl"`` or ``"qwen3_vl"``.
        path: A local checkpoint dir (its ``config.json``, and the normalisation saved beside it).
        tiny: The tiny model's overrides (``tiny.TINY_DEFAULTS`` keys) when ``path`` is None.
    """
    if path is not None:
        path = Path(path)
        vision = AutoConfig.from_pretrained(path, local_files_only=True).vision_config
        meta = json.loads((path / POLICY_FILE).read_text()) if (path / POLICY_FILE).exists() else {}
        mean, std = meta.get("image_mean"), meta.get("image_std")
        if mean is None:
            mean, std = _processor_norm(path)
    else:
        vision = tiny_config(arch, build_tokenizer((tiny or {}).get("vocab_size", 768)), tiny).vision_config
        mean = std = None
    default_mean, default_std = NORM[arch]
    return FramePatcher(
        vision.patch_size,
        vision.temporal_patch_size,
        vision.spatial_merge_size,
        tuple(mean or default_mean),
        tuple(std or default_std),
    )
