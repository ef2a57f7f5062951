"""What a saved policy carries beside its weights: the frame geometry it was trained with, and the
transformers processor files (image + video preprocessor configs) that AutoProcessor and serving
engines read. Video processors need torchvision, which does not import on the CPU machines: the
files are checked by value and the PIL image processor is loaded from them."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from videomem.data.datamodule import VideoQADataModule
from videomem.model.checkpoint import FrameGeometry, saved_geometry
from videomem.model.policy import Policy, build_policy
from videomem.model.vision import CLIP_MEAN, CLIP_STD, HALF, frames_to_patches

GEOMETRY = FrameGeometry(height=56, width=112, frames_per_clip=8, clips=4, precision="bf16-mixed")


def test_geometry_round_trips_through_save_and_load(tmp_path):
    policy = build_policy("qwen2_5_vl")
    assert policy.geometry is None
    policy.save_pretrained(tmp_path / "a", geometry=GEOMETRY)
    assert saved_geometry(tmp_path / "a") == GEOMETRY
    assert json.loads((tmp_path / "a" / "videomem_policy.json").read_text())["geometry"] == {
        "height": 56,
        "width": 112,
        "frames_per_clip": 8,
        "clips": 4,
        "precision": "bf16-mixed",  # the training precision: evaluation on a GPU runs in bfloat16
    }
    loaded = Policy.from_pretrained(tmp_path / "a")
    assert loaded.geometry == GEOMETRY and loaded.geometry.frame_size == (56, 112)
    loaded.save_pretrained(tmp_path / "b")  # no argument: the loaded geometry is kept
    assert saved_geometry(tmp_path / "b") == GEOMETRY


def test_no_geometry_gives_none(tmp_path):
    policy = build_policy("qwen3_vl")
    policy.save_pretrained(tmp_path / "ours")
    assert saved_geometry(tmp_path / "ours") is None
    policy.model.save_pretrained(tmp_path / "hf")  # a real Qwen-VL dir has no videomem_policy.json
    policy.tokenizer.save_pretrained(tmp_path / "hf")
    assert saved_geometry(tmp_path / "hf") is None
    assert Policy.from_pretrained(tmp_path / "hf").geometry is None
    assert saved_geometry(tmp_path / "missing") is None


def test_malformed_geometry_fails_with_the_file_named(tmp_path):
    (tmp_path / "videomem_policy.json").write_text(json.dumps({"geometry": {"height": 56}}))
    with pytest.raises(ValueError, match="videomem_policy.json.*malformed frame geometry"):
        saved_geometry(tmp_path)
    with pytest.raises(ValueError, match="frames_per_clip"):
        FrameGeometry(56, 56, 0)


def test_geometry_from_the_data_config_and_the_datamodule():
    cfg = OmegaConf.create({"frame_size": [56, 84], "frames_per_clip": 4, "backend": "decord"})
    assert FrameGeometry.from_data(cfg) == FrameGeometry(56, 84, 4)
    dm = VideoQADataModule(frame_size=(64, 32), frames_per_clip=6)
    assert FrameGeometry.from_data(dm, clips=3) == FrameGeometry(64, 32, 6, 3)
    assert FrameGeometry.from_data(VideoQADataModule(frame_size=None)) is None  # stored size: unknown
    assert FrameGeometry.from_data(None) is None


@pytest.mark.parametrize(
    ("arch", "norm", "patch", "video_type"),
    [
        ("qwen2_5_vl", (CLIP_MEAN, CLIP_STD), 14, "Qwen2VLVideoProcessor"),
        ("qwen3_vl", (HALF, HALF), 16, "Qwen3VLVideoProcessor"),
    ],
)
def test_processor_files_carry_the_policy_vision_settings(arch, norm, patch, video_type, tmp_path):
    policy = build_policy(arch)
    policy.save_pretrained(tmp_path)
    image = json.loads((tmp_path / "preprocessor_config.json").read_text())
    video = json.loads((tmp_path / "video_preprocessor_config.json").read_text())
    for cfg in (image, video):
        assert (cfg["patch_size"], cfg["temporal_patch_size"], cfg["merge_size"]) == (patch, 2, 2)
        assert cfg["image_mean"] == list(norm[0]) and cfg["image_std"] == list(norm[1])
        assert (
            cfg["processor_class"]
            == {"qwen2_5_vl": "Qwen2_5_VLProcessor", "qwen3_vl": "Qwen3VLProcessor"}[arch]
        )
        assert 0 < cfg["size"]["shortest_edge"] < cfg["size"]["longest_edge"]
    assert image["image_processor_type"] == "Qwen2VLImageProcessor"
    assert video["video_processor_type"] == video_type
    assert (tmp_path / "chat_template.jinja").read_text() == policy.tokenizer.chat_template


@pytest.mark.parametrize("arch", ["qwen2_5_vl", "qwen3_vl"])
def test_the_pil_image_processor_loads_and_patches_as_the_policy_does(arch, tmp_path):
    """AutoImageProcessor reads the saved dir; on a frame of a trained size it gives our patches."""
    from transformers import AutoImageProcessor

    policy = build_policy(arch)
    policy.save_pretrained(tmp_path)
    processor = AutoImageProcessor.from_pretrained(tmp_path, backend="pil")
    assert type(processor).__name__ == "Qwen2VLImageProcessorPil"
    assert (processor.patch_size, processor.merge_size) == (policy.patch_size, policy.merge_size)
    assert tuple(processor.image_mean) == policy.image_mean
    m = policy.patch_multiple
    side = -(-int(processor.size.shortest_edge**0.5) // m) * m  # at least the min pixels: no resize
    frame = torch.randint(
        0, 256, (side, side, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    out = processor(images=[frame.numpy()], return_tensors="pt")
    ours, grid = frames_to_patches(
        frame[None],  # one frame, repeated to the temporal patch as the image processor does
        patch_size=policy.patch_size,
        temporal_patch_size=policy.temporal_patch_size,
        merge_size=policy.merge_size,
        mean=policy.image_mean,
        std=policy.image_std,
    )
    assert out["image_grid_thw"][0].tolist() == grid.tolist()
    torch.testing.assert_close(out["pixel_values"], ours, rtol=0, atol=1e-5)


def test_norm_is_read_back_from_the_processor_file(tmp_path):
    """A saved dir without our metadata (as a server might copy it) keeps its normalisation."""
    policy = build_policy("qwen2_5_vl")
    policy.image_mean, policy.image_std = (0.1, 0.2, 0.3), (0.4, 0.5, 0.6)
    policy.save_pretrained(tmp_path)
    (tmp_path / "videomem_policy.json").unlink()
    loaded = Policy.from_pretrained(tmp_path)
    assert loaded.image_mean == (0.1, 0.2, 0.3) and loaded.image_std == (0.4, 0.5, 0.6)
