"""frames_to_patches: shape, the official processor's patch order, normalisation, padding, errors."""

from __future__ import annotations

import pytest
import torch

from videomem.model.vision import CLIP_MEAN, CLIP_STD, HALF, frames_to_patches, num_video_tokens

SETTINGS = {"qwen2_5_vl": (14, CLIP_MEAN, CLIP_STD), "qwen3_vl": (16, HALF, HALF)}


def reference_patches(frames, patch, tp, merge, mean, std):
    """Patch by patch with explicit indexing: merge blocks row-major, 2x2 sub-patches inside each block."""
    video = (frames.permute(0, 3, 1, 2).float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(
        std
    ).view(1, 3, 1, 1)
    while video.shape[0] % tp:
        video = torch.cat([video, video[-1:]])
    out = []
    for t in range(video.shape[0] // tp):
        for bh in range(video.shape[2] // (patch * merge)):
            for bw in range(video.shape[3] // (patch * merge)):
                for mh in range(merge):
                    for mw in range(merge):
                        y, x = (bh * merge + mh) * patch, (bw * merge + mw) * patch
                        cube = video[t * tp : (t + 1) * tp, :, y : y + patch, x : x + patch]  # [tp, C, p, p]
                        out.append(cube.permute(1, 0, 2, 3).reshape(-1))  # channel, time, row, col
    return torch.stack(out)


@pytest.mark.parametrize("arch", ["qwen2_5_vl", "qwen3_vl"])
@pytest.mark.parametrize("num_frames", [4, 3])
def test_patches_match_reference_order(arch, num_frames):
    patch, mean, std = SETTINGS[arch]
    frames = torch.randint(0, 256, (num_frames, 2 * patch * 2, 3 * patch * 2, 3), dtype=torch.uint8)
    pixels, grid = frames_to_patches(
        frames, patch_size=patch, temporal_patch_size=2, merge_size=2, mean=mean, std=std
    )
    # 4 or 3 frames -> t=2 (3 is padded with its last frame); 56x84 / 14 -> 4x6 patches (64x96 / 16 likewise)
    assert grid.tolist() == [2, 4, 6]
    assert pixels.shape == (2 * 4 * 6, 3 * 2 * patch * patch)
    assert num_video_tokens(grid, 2) == 12  # t*h*w / merge^2
    torch.testing.assert_close(pixels, reference_patches(frames, patch, 2, 2, mean, std))


def test_normalisation_values():
    white = torch.full((2, 28, 28, 3), 255, dtype=torch.uint8)
    pixels, _ = frames_to_patches(
        white, patch_size=14, temporal_patch_size=2, merge_size=2, mean=HALF, std=HALF
    )
    assert torch.allclose(pixels, torch.ones_like(pixels))  # (1 - 0.5) / 0.5
    black = torch.zeros(2, 28, 28, 3, dtype=torch.uint8)
    pixels, _ = frames_to_patches(
        black, patch_size=14, temporal_patch_size=2, merge_size=2, mean=CLIP_MEAN, std=CLIP_STD
    )
    # first 2*14*14 values are the red channel of the first patch
    assert pixels[0, 0].item() == pytest.approx(-0.48145466 / 0.26862954)
    assert pixels[0, 2 * 14 * 14].item() == pytest.approx(-0.4578275 / 0.26130258)


def test_padding_repeats_last_frame():
    frames = torch.zeros(3, 28, 28, 3, dtype=torch.uint8)
    frames[2] = 200
    pixels, grid = frames_to_patches(
        frames, patch_size=14, temporal_patch_size=2, merge_size=2, mean=HALF, std=HALF
    )
    assert grid[0] == 2
    second = pixels[grid[1] * grid[2] :].view(-1, 3, 2, 14, 14)  # t=1: frames 2 and its copy
    assert torch.equal(second[:, :, 0], second[:, :, 1])


@pytest.mark.parametrize("shape", [(2, 30, 28, 3), (2, 28, 14, 3), (2, 28, 28, 4), (0, 28, 28, 3)])
def test_bad_shapes_raise(shape):
    with pytest.raises(ValueError):
        frames_to_patches(
            torch.zeros(shape, dtype=torch.uint8),
            patch_size=14,
            temporal_patch_size=2,
            merge_size=2,
            mean=HALF,
            std=HALF,
        )


def test_non_uint8_raises():
    with pytest.raises(ValueError, match="uint8"):
        frames_to_patches(
            torch.zeros(2, 28, 28, 3), patch_size=14, temporal_patch_size=2, merge_size=2, mean=HALF, std=HALF
        )


@pytest.mark.parametrize("arch", ["qwen2_5_vl", "qwen3_vl"])
def test_patches_cut_in_the_loader_give_the_same_batch(arch, tmp_path):
    """``frame_patcher`` reads the geometry from the model config (tiny overrides or a saved dir) and
    ``build_inputs`` takes its ``ClipPatches`` in place of the frames: the same batch either way; a
    clip cut for another geometry is refused with one line."""
    from videomem.model.checkpoint import frame_patcher
    from videomem.model.policy import build_policy

    tiny = {"hidden_size": 64, "vision_patch_size": 8}
    policy = build_policy(arch, tiny=tiny)
    patcher = frame_patcher(arch, tiny=tiny)
    policy.save_pretrained(tmp_path)
    assert frame_patcher(arch, path=str(tmp_path)) == patcher
    m = policy.patch_multiple
    g = torch.Generator().manual_seed(0)
    frames = [torch.randint(0, 256, (3, m, 2 * m, 3), dtype=torch.uint8, generator=g) for _ in range(2)]
    messages = [[{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Q"}]}]] * 2
    plain = policy.build_inputs(messages, frames, completions=["a", "b c"])
    cut = policy.build_inputs(messages, [patcher(f) for f in frames], completions=["a", "b c"])
    for name in (
        "input_ids",
        "attention_mask",
        "mm_token_type_ids",
        "pixel_values_videos",
        "video_grid_thw",
        "labels",
    ):
        assert torch.equal(getattr(plain, name), getattr(cut, name)), name
    other = frame_patcher(arch, tiny={"vision_patch_size": 4})
    with pytest.raises(ValueError, match="build data.transform from the policy's own model config"):
        policy.build_inputs(messages[:1], [other(frames[0][:, :8, :8])])
