"""The transformers processor files of a saved policy, so that serving engines can load it.

``AutoProcessor``, ``transformers serve``, vLLM and SGLang read a Qwen-VL directory's image processor
from ``preprocessor_config.json`` and its video processor from ``video_preprocessor_config.json``;
without them loading stops ("Can't load image processor ..."). ``processor_configs`` writes them as the
official Qwen2.5-VL / Qwen3-VL checkpoints do, with the policy's own vision geometry (patch, temporal
patch and merge sizes, from its vision config) and the normalisation it was trained with
(``image_mean`` / ``image_std``, which ``checkpoint._processor_norm`` reads back), and the official
pixel bounds. The tokenizer and its chat template are written by the tokenizer itself.

It deliberately does not import or build a processor: every transformers video processor needs
torchvision, which does not import beside the CPU torch (tests load the PIL image processor only).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from videomem.model.policy import Policy

IMAGE_FILE, VIDEO_FILE = "preprocessor_config.json", "video_preprocessor_config.json"
PROCESSOR_CLASS = {"qwen2_5_vl": "Qwen2_5_VLProcessor", "qwen3_vl": "Qwen3VLProcessor"}
VIDEO_PROCESSOR_TYPE = {"qwen2_5_vl": "Qwen2VLVideoProcessor", "qwen3_vl": "Qwen3VLVideoProcessor"}
# The official checkpoints' pixel bounds ({shortest_edge: min pixels, longest_edge: max pixels}):
# Qwen2.5-VL-7B-Instruct's min_pixels / max_pixels (one file for images and videos); Qwen3-VL's
# preprocessor_config.json and video_preprocessor_config.json (the video one bounds t*h*w).
IMAGE_SIZE = {
    "qwen2_5_vl": {"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 16384},
    "qwen3_vl": {"shortest_edge": 256 * 256, "longest_edge": 4096 * 4096},
}
VIDEO_SIZE = {
    "qwen2_5_vl": IMAGE_SIZE["qwen2_5_vl"],
    "qwen3_vl": {"shortest_edge": 64 * 64, "longest_edge": 24 * 1024 * 1024},
}


def processor_configs(policy: Policy) -> dict[str, dict]:
    """``{file name: JSON content}`` of the image and video processor configs of ``policy``."""
    shared = {
        "patch_size": policy.patch_size,
        "temporal_patch_size": policy.temporal_patch_size,
        "merge_size": policy.merge_size,
        "image_mean": list(policy.image_mean),
        "image_std": list(policy.image_std),
        "do_resize": True,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "do_convert_rgb": True,
        "resample": 3,  # PIL bicubic, as the official processors
        "processor_class": PROCESSOR_CLASS[policy.arch],
    }
    image = {
        **shared,
        "image_processor_type": "Qwen2VLImageProcessor",  # both archs; the PIL backend where no torchvision
        "size": dict(IMAGE_SIZE[policy.arch]),
    }
    video = {
        **shared,
        "video_processor_type": VIDEO_PROCESSOR_TYPE[policy.arch],
        "size": dict(VIDEO_SIZE[policy.arch]),
    }
    if policy.arch == "qwen3_vl":
        video.update(do_sample_frames=True, fps=2, min_frames=4, max_frames=768)
    return {IMAGE_FILE: image, VIDEO_FILE: video}
