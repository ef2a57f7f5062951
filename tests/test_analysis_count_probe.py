"""analysis/count_probe.py finds the clips that add two counted objects and reads the digit the policy writes."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import torch

from tests.test_memory_loop import pixel_qa
from videomem.data.types import VideoQA
from videomem.memory.loop import step_messages
from videomem.memory.prompt import format_target
from videomem.model.policy import build_policy

# analysis/ probes of the synthetic task: out of the default test run (`-m slow` runs them)
pytestmark = pytest.mark.slow


@pytest.fixture
def script():
    """``script("count_probe")`` imports ``analysis/count_probe.py`` (not a package)."""

    def load(name: str) -> ModuleType:
        path = Path(__file__).resolve().parents[1] / "analysis" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


def _qa(memories: list[str], side: int, category: str = "count") -> VideoQA:
    g = torch.Generator().manual_seed(len(memories))
    return pixel_qa(0, len(memories), side, g, memories=memories, category=category, answer="C")


def test_only_clips_that_add_two_or_more_are_probed(script):
    mod = script("count_probe")
    so_far = [f"red objects so far: {n}" for n in range(5)]
    qas = [
        _qa([so_far[0], so_far[2], so_far[3]], 28),  # clip 1 adds two
        _qa([so_far[1], so_far[2], so_far[2]], 28),  # one at a time
        _qa([so_far[3], so_far[3], so_far[4]], 28),  # clip 0 adds three
        _qa(["green object: circle"] * 3, 28, category="shape"),
    ]
    found = [(qa.memories, t, before, after) for qa, t, before, after in mod.clips_adding(qas)]
    assert found == [(qas[0].memories, 1, 0, 2), (qas[2].memories, 0, 0, 3)]


def test_the_digit_distribution_is_the_policy_probability_of_each_count(script):
    mod = script("count_probe")
    policy = build_policy("qwen2_5_vl", tiny={"hidden_size": 64, "num_hidden_layers": 2}).eval()
    qa = _qa([f"red objects so far: {n}" for n in (0, 2, 3)], 2 * policy.patch_multiple)
    probs = mod.digit_distribution(policy, qa, 1, 2)
    assert probs.shape == (5,) and 0 < float(probs.sum()) <= 1 + 1e-6
    # each digit's probability, read off the forward pass over the completion that writes it
    messages = step_messages(qa, 1, qa.memories[0], policy.system_prompt)
    for d in range(5):
        ids = policy._encode(format_target(f"red objects so far: {d}", "A"))
        inputs = policy.build_inputs([messages], [qa.clips[1]], [ids])
        with torch.no_grad():
            logp = torch.log_softmax(policy(inputs).logits[0].float(), -1)  # [L, V]
        labels = inputs.labels[0]
        positions = (labels != -100).nonzero().flatten()
        digit = policy._encode(f"so far: {d}")[-1]
        at = next(int(p) for p in positions if int(labels[p]) == digit)
        assert torch.allclose(probs[d], logp[at - 1, digit].exp(), atol=1e-5)
