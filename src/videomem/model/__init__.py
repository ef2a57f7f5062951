"""The policy model: a real transformers Qwen2.5-VL / Qwen3-VL with its tokenizer (policy.py), a local
tokenizer and tiny configs for CPU work (tiny.py), frames -> patches (vision.py) and the shared-prefill
decoding pieces (decoding.py). Knows nothing of memory prompts, rewards or training."""

from videomem.model.policy import Policy, PolicyInputs, build_policy

__all__ = ["Policy", "PolicyInputs", "build_policy"]
