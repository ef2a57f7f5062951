"""Frames -> ``pixel_values_videos`` + ``video_grid_thw`` for Qwen2.5-VL / Qwen3-VL, in plain torch.

The transformers ``*VideoProcessor`` classes need torchvision, which does not import beside the CPU
torch on CPU-only installs. This reproduces their ``patchify`` exactly: rescale to [0, 1], normalise,
pad the frame count to a multiple of the temporal patch by repeating the last frame, then cut patches
in the vision tower's merge order (each run of merge^2 consecutive patches is one 2x2 block that the
patch merger fuses into one LLM token).

``FramePatcher`` does the same to a clip in the data loader's worker processes (the datamodule's
``transform``, built by Hydra from the model config with ``frame_patcher``): a ``ClipPatches`` carries
the patches, the grid and the geometry they were cut with, and ``Policy.build_inputs`` takes it in
place of the frames, after checking that geometry against its own.

It deliberately does not resize or sample frames: decode at the right size (H, W multiples of
patch * merge) and frame count upstream (data/video.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# The official processors' normalisation (transformers.utils.constants).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # Qwen2-VL / Qwen2.5-VL
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HALF = (0.5, 0.5, 0.5)  # Qwen3-VL (IMAGENET_STANDARD_MEAN / _STD)
NORM = {"qwen2_5_vl": (CLIP_MEAN, CLIP_STD), "qwen3_vl": (HALF, HALF)}


def frames_to_patches(
    frames: torch.Tensor,
    *,
    patch_size: int,
    temporal_patch_size: int,
    merge_size: int,
    mean: tuple[float, ...] | list[float],
    std: tuple[float, ...] | list[float],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut one clip into flattened vision patches, in the official Qwen2-VL processor's order.

    Args:
        frames: ``[F, H, W, 3]`` uint8 RGB frames; H and W multiples of ``patch_size * merge_size``.
        patch_size: Spatial patch side (14 for Qwen2.5-VL, 16 for Qwen3-VL).
        temporal_patch_size: Frames per temporal patch (2).
        merge_size: Spatial merge factor of the patch merger (2).
        mean: Per-channel normalisation mean (on the [0, 1] scale).
        std: Per-channel normalisation std.

    Returns:
        ``pixel_values_videos`` ``[t*h*w, 3*tp*p*p]`` float32 and ``grid_thw`` ``[3]`` long ``(t, h, w)``
        in patches; the LLM sees ``t*h*w / merge_size**2`` video tokens.

    Raises:
        ValueError: On a wrong shape/dtype or H, W not multiples of ``patch_size * merge_size``.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be [F, H, W, 3], got {tuple(frames.shape)}")
    if frames.dtype != torch.uint8:
        raise ValueError(f"frames must be uint8, got {frames.dtype}")
    num_frames, height, width, _ = frames.shape
    multiple = patch_size * merge_size
    if num_frames == 0 or height % multiple or width % multiple:
        raise ValueError(
            f"frame size {height}x{width} (F={num_frames}) is not a multiple of patch_size*merge_size="
            f"{multiple}; resize at decode time to multiples of {multiple}"
        )
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    video = frames.permute(0, 3, 1, 2).float().div(255.0)  # [F, 3, H, W]
    video = (video - mean_t) / std_t
    if pad := -num_frames % temporal_patch_size:
        video = torch.cat([video, video[-1:].expand(pad, -1, -1, -1)], dim=0)  # [F', 3, H, W]
    grid_t = video.shape[0] // temporal_patch_size
    grid_h, grid_w = height // patch_size, width // patch_size
    patches = video.view(
        grid_t, temporal_patch_size, 3,
        grid_h // merge_size, merge_size, patch_size,
        grid_w // merge_size, merge_size, patch_size,
    )  # fmt: skip
    # -> (t, h_blocks, w_blocks, merge_h, merge_w, channel, temporal, patch_h, patch_w)
    patches = patches.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    flat = patches.reshape(
        grid_t * grid_h * grid_w, 3 * temporal_patch_size * patch_size * patch_size
    )  # [N, D]
    return flat, torch.tensor([grid_t, grid_h, grid_w], dtype=torch.long)


class ClipPatches:
    """One clip cut into vision patches (``frames_to_patches``), ready for ``Policy.build_inputs``.

    A plain class, not a dataclass: Lightning's batch transfer rebuilds dataclasses field by field,
    which would give each question its own copy; the questions of one video must keep sharing one
    object (one vision encode, ``model/features.py``). ``build_inputs`` moves the tensors.

    Attributes:
        pixel_values: ``[t*h*w, 3*tp*p*p]`` float32 patches.
        grid_thw: ``[3]`` (t, h, w) in patches.
        num_frames: Frames of the clip (Qwen3-VL writes a timestamp per temporal patch of them).
        geometry: ``(patch_size, temporal_patch_size, merge_size, mean, std)`` they were cut with.
    """

    __slots__ = ("pixel_values", "grid_thw", "num_frames", "geometry")

    def __init__(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor, num_frames: int, geometry: tuple):
        self.pixel_values, self.grid_thw, self.num_frames, self.geometry = (
            pixel_values,
            grid_thw,
            num_frames,
            geometry,
        )


@dataclass(frozen=True)
class FramePatcher:
    """``[F, H, W, 3]`` uint8 frames -> ``ClipPatches``, picklable for DataLoader workers.

    Attributes:
        patch_size, temporal_patch_size, merge_size: The vision tower's geometry.
        mean, std: Normalisation on the [0, 1] scale.
    """

    patch_size: int
    temporal_patch_size: int
    merge_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def geometry(self) -> tuple:
        return (self.patch_size, self.temporal_patch_size, self.merge_size, tuple(self.mean), tuple(self.std))

    def __call__(self, frames: torch.Tensor) -> ClipPatches:
        patches, grid = frames_to_patches(
            frames,
            patch_size=self.patch_size,
            temporal_patch_size=self.temporal_patch_size,
            merge_size=self.merge_size,
            mean=self.mean,
            std=self.std,
        )
        return ClipPatches(patches, grid, int(frames.shape[0]), self.geometry)


def num_video_tokens(grid_thw: torch.Tensor, merge_size: int) -> int:
    """Number of ``<|video_pad|>`` tokens one video occupies in the LLM sequence: t*h*w / merge^2."""
    return int(grid_thw.prod()) // merge_size**2
