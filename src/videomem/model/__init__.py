"""The policy model: a real transformers Qwen2.5-VL / Qwen3-VL with its tokenizer (policy.py), its
batching (inputs.py), shared-prefill sampling (generation.py, decoding.py), save / load and the
``build_policy`` factory (checkpoint.py, processor_files.py), a local tokenizer and tiny configs for CPU
work (tiny.py) and frames -> patches (vision.py). Knows nothing of memory prompts, rewards or training."""

from videomem.model.checkpoint import FrameGeometry, build_policy, saved_geometry
from videomem.model.policy import Policy, PolicyInputs

__all__ = ["FrameGeometry", "Policy", "PolicyInputs", "build_policy", "saved_geometry"]
