"""Chat messages + clip frames -> a left-padded model batch (``PolicyInputs``), for one policy.

``build_inputs`` renders each row's chat with the tokenizer's template, expands its one
``<|video_pad|>`` into the official processors' placeholder (``video_placeholder``: Qwen2.5-VL
contiguous pads, Qwen3-VL per-frame timestamps between vision start/end), cuts the frames into vision
patches (``model/vision.py``; a clip the loader workers already cut is taken as it is, once its
geometry is checked), appends an optional completion closed with ``<|im_end|>`` and labels
exactly those tokens, then left pads. ``mm_token_type_ids`` (0 text, 1 image pad, 2 video pad) is built
here because Qwen2.5-VL silently falls back to 1-D rope without it.

It deliberately runs no model: ``policy.Policy`` calls these functions and runs the forward.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from videomem.model.vision import ClipPatches, FramePatcher, num_video_tokens

if TYPE_CHECKING:
    from videomem.model.policy import Policy

VIDEO_PAD, VISION_START, VISION_END = "<|video_pad|>", "<|vision_start|>", "<|vision_end|>"
DEFAULT_FPS = 2.0  # Qwen's default video sampling rate, used when the caller gives none


@dataclass
class PolicyInputs:
    """A left-padded batch ready for the model (one video per row).

    Attributes:
        input_ids: ``[B, L]`` token ids, left padded.
        attention_mask: ``[B, L]`` 1 on real tokens, 0 on padding.
        mm_token_type_ids: ``[B, L]`` 0 text, 1 image pad, 2 video pad (drives the 3-D rope).
        pixel_values_videos: ``[P, D]`` all videos' patches, batch order.
        video_grid_thw: ``[B, 3]`` (t, h, w) patch grid of each row's video.
        second_per_grid_ts: ``[B]`` seconds per temporal grid step of each video (Qwen2.5-VL positions).
        labels: ``[B, L]`` -100 except completion tokens (training only).
        sources: The clip object each row was built from (rows given the same object show the same
            clip and share one vision encode, ``model/features.py``); empty when unknown.
    """

    input_ids: Tensor
    attention_mask: Tensor
    mm_token_type_ids: Tensor
    pixel_values_videos: Tensor
    video_grid_thw: Tensor
    second_per_grid_ts: Tensor
    labels: Tensor | None = None
    sources: tuple = ()

    def to(self, device: torch.device | str) -> PolicyInputs:
        """The same batch on ``device``."""
        return PolicyInputs(**{f.name: _to(getattr(self, f.name), device) for f in fields(self)})

    def model_kwargs(self) -> dict:
        """Keyword arguments of the HF model's forward (labels and sources excluded).

        Qwen3-VL's forward ignores ``second_per_grid_ts`` but HF ``generate`` rejects it: drop it there.
        """
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("labels", "sources")}


def _to(value, device: torch.device | str):
    return value.to(device) if isinstance(value, Tensor) else value


def encode(policy: Policy, text: str) -> list[int]:
    """Token ids of ``text`` (no special tokens added)."""
    return policy.tokenizer(text, add_special_tokens=False)["input_ids"]


def completion_ids(policy: Policy, completion: str | list[int]) -> list[int]:
    """A completion (text, or token ids as sampled) as trained: its ids closed with ``<|im_end|>``."""
    ids = encode(policy, completion) if isinstance(completion, str) else list(completion)
    return ids + [policy.im_end_id]


def video_placeholder(policy: Policy, grid: Tensor, num_frames: int, fps: float) -> str:
    """The expansion of one ``<|video_pad|>``, as the official processors write it.

    Qwen2.5-VL: ``t*h*w/merge^2`` pads. Qwen3-VL: per temporal patch a ``<T seconds>`` timestamp
    (mean time of its frames) then ``<|vision_start|>`` pads ``<|vision_end|>``.
    """
    if policy.arch == "qwen2_5_vl":
        return VIDEO_PAD * num_video_tokens(grid, policy.merge_size)
    per_frame = int(grid[1] * grid[2]) // policy.merge_size**2
    tp = policy.temporal_patch_size
    idx = list(range(num_frames)) + [num_frames - 1] * (-num_frames % tp)
    times = [(idx[k] + idx[k + tp - 1]) / 2 / fps for k in range(0, len(idx), tp)]
    return "".join(f"<{t:.1f} seconds>{VISION_START}{VIDEO_PAD * per_frame}{VISION_END}" for t in times)


def frame_patcher(policy: Policy) -> FramePatcher:
    """The frames -> patches transform of ``policy`` (its vision geometry and normalisation)."""
    return FramePatcher(
        policy.patch_size,
        policy.temporal_patch_size,
        policy.merge_size,
        tuple(policy.image_mean),
        tuple(policy.image_std),
    )


def _same_geometry(a: tuple, b: tuple) -> bool:
    """Equal integers, and normalisation equal to float precision (it may have passed through JSON)."""
    return a[:3] == b[:3] and all(abs(x - y) < 1e-6 for x, y in zip(a[3] + a[4], b[3] + b[4]))


def build_inputs(
    policy: Policy,
    messages: list[list[dict]],
    videos: list[Tensor],
    completions: list[str | list[int]] | None = None,
    *,
    video_fps: float | list[float] | None = None,
) -> PolicyInputs:
    """Render, tokenise and left-pad a batch of chat prompts, one video each (``Policy.build_inputs``).

    Args:
        policy: Supplies the tokenizer, vision geometry, normalisation and special token ids.
        messages: Per row, chat messages whose user content holds exactly one ``{"type": "video"}``.
        videos: Per row, ``[F, H, W, 3]`` uint8 frames (H, W multiples of ``patch_multiple``), or the
            ``ClipPatches`` a ``FramePatcher`` of the same geometry made of them (in a loader worker).
        completions: Optional per-row completion (text, or token ids as sampled) appended after the
            generation prompt and closed with ``<|im_end|>``; labels are set on exactly those tokens.
        video_fps: Frames per second of the given frames (one value or one per row); sets the
            temporal rope spacing (Qwen2.5-VL) and frame timestamps (Qwen3-VL). Default 2.0.

    Returns:
        The batch; ``labels`` is None unless ``completions`` is given. ``sources`` holds the given
        clip objects: rows given the same object share one vision encode (``model/features.py``).
    """
    if len(messages) != len(videos) or (completions is not None and len(completions) != len(videos)):
        raise ValueError("messages, videos (and completions) must have one entry per row")
    fps = video_fps if isinstance(video_fps, list) else [video_fps or DEFAULT_FPS] * len(videos)
    if len(fps) != len(videos):
        raise ValueError("video_fps must be one value or one per row")
    rows, starts, pixels, grids = [], [], [], []
    patcher = frame_patcher(policy)
    for i, (msgs, clip) in enumerate(zip(messages, videos)):
        clip = clip if isinstance(clip, ClipPatches) else patcher(clip)
        if not _same_geometry(clip.geometry, patcher.geometry):
            raise ValueError(
                f"row {i}: the clip was cut into patches with (patch, temporal patch, merge, mean, std) = "
                f"{clip.geometry}, but this policy uses {patcher.geometry}: build data.transform from the "
                "policy's own model config"
            )
        patches, grid = clip.pixel_values, clip.grid_thw
        text = policy.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        if text.count(VIDEO_PAD) != 1:
            raise ValueError(f"row {i}: the rendered prompt must hold exactly one video placeholder")
        text = text.replace(VIDEO_PAD, video_placeholder(policy, grid, clip.num_frames, fps[i]))
        ids = policy.tokenizer(text, add_special_tokens=False)["input_ids"]
        starts.append(len(ids))
        if completions is not None:
            c = completions[i]
            ids = ids + completion_ids(policy, c)
        rows.append(ids)
        pixels.append(patches)
        grids.append(grid)
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), policy.pad_id, dtype=torch.long)  # [B, L]
    attention_mask = torch.zeros(len(rows), width, dtype=torch.long)  # [B, L]
    labels = torch.full((len(rows), width), -100, dtype=torch.long) if completions is not None else None
    for i, ids in enumerate(rows):
        input_ids[i, width - len(ids) :] = torch.tensor(ids)
        attention_mask[i, width - len(ids) :] = 1
        if labels is not None:
            labels[i, width - len(ids) + starts[i] :] = input_ids[i, width - len(ids) + starts[i] :]
    mm_types = (input_ids == policy.image_token_id).long() + 2 * (input_ids == policy.video_token_id).long()
    return PolicyInputs(
        input_ids=input_ids,
        attention_mask=attention_mask,
        mm_token_type_ids=mm_types,
        pixel_values_videos=torch.cat(pixels),  # [P, D]
        video_grid_thw=torch.stack(grids),  # [B, 3]
        second_per_grid_ts=torch.tensor([policy.temporal_patch_size / f for f in fps]),  # [B]
        labels=labels,
        sources=tuple(videos),
    )
