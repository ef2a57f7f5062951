"""The clip-by-clip loop: memory hand-off, clip isolation, fallbacks, memory-off control."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from videomem.data.types import VideoQA
from videomem.memory.loop import GenerationConfig, run_memory_loop


@dataclass
class _Inputs:
    messages: list
    videos: list

    def to(self, device):
        return self


class ScriptedPolicy:
    """Replies from a script keyed by (video_id, clip index); records every prompt it was shown."""

    class model:  # noqa: N801 - stands in for the HF model's .device
        device = torch.device("cpu")

    def __init__(self, script: dict[tuple[str, int], str]) -> None:
        self.script = script
        self.calls: list[_Inputs] = []
        self._pending: list[str] = []

    def build_inputs(self, messages, videos, completions=None):
        inputs = _Inputs(messages, videos)
        self.calls.append(inputs)
        return inputs

    def generate(self, inputs, *, num_samples=1, **kw):
        out = []
        for _msgs, video in zip(inputs.messages, inputs.videos):
            vid, clip = int(video[0, 0, 0, 0]), int(video[0, 0, 0, 1])
            out.append([[len(self._pending)] for _ in range(num_samples)])
            self._pending.append(self.script[(f"v{vid}", clip)])
        return out

    def decode(self, ids):
        return self._pending[ids[0]]

    def count_tokens(self, text):
        return len(text.split())


def count_qa(vid: int, clips: list[torch.Tensor], **fields) -> VideoQA:
    """A `count` question of video ``v{vid}`` over ``clips`` (``fields`` override the defaults)."""
    values = dict(
        video_id=f"v{vid}",
        qid="q",
        question="How many red objects appear in the whole video?",
        options=["1", "2", "3", "4"],
        answer="B",
        category="count",
        clips=clips,
        spans=None,
    )
    return VideoQA(**(values | fields))


def make_qa(vid: int, num_clips: int) -> VideoQA:
    # each clip's frames carry (video, clip) in pixel [0,0,0,:2] so the test can see what was shown
    clips = [torch.zeros(2, 4, 4, 3, dtype=torch.uint8) for _ in range(num_clips)]
    for t, c in enumerate(clips):
        c[..., 0], c[..., 1] = vid, t
    spans = [(4.0 * t, 4.0 * t + 4) for t in range(num_clips)]
    return count_qa(vid, clips, question="How many?", spans=spans)


def pixel_qa(vid: int, num_clips: int, side: int, generator: torch.Generator, **fields) -> VideoQA:
    """A `count` question over random ``side`` x ``side`` frames a real policy can read."""
    shape = (4, side, side, 3)
    clips = [torch.randint(0, 256, shape, generator=generator, dtype=torch.uint8) for _ in range(num_clips)]
    return count_qa(vid, clips, **fields)


def user_text(call: _Inputs, row: int) -> str:
    return call.messages[row][1]["content"][1]["text"]


def test_memory_of_step_t_feeds_step_t_plus_1_and_only_clip_t_is_shown() -> None:
    script = {
        ("v0", 0): "<memory>one red</memory><answer>A</answer>",
        ("v0", 1): "<memory>two red</memory><answer>B</answer>",
        ("v0", 2): "<memory>two red, blue</memory><answer>B</answer>",
    }
    policy = ScriptedPolicy(script)
    (res,) = run_memory_loop(policy, [make_qa(0, 3)])
    assert len(policy.calls) == 3
    shown = [user_text(c, 0) for c in policy.calls]
    assert "Memory: (empty)" in shown[0] and "Clip 1 of 3" in shown[0]
    assert "Memory: one red" in shown[1] and "Clip 2 of 3" in shown[1]
    assert "Memory: two red" in shown[2] and "Clip 3 of 3" in shown[2]
    for t, call in enumerate(policy.calls):
        assert len(call.videos) == 1 and int(call.videos[0][0, 0, 0, 1]) == t  # clip t's frames only
    assert res.answers == ["A", "B", "B"] and res.prediction == "B"
    assert [s.memory_out for s in res.steps] == ["one red", "two red", "two red, blue"]
    assert [s.memory_tokens for s in res.steps] == [2, 2, 3]


def test_invalid_memory_keeps_previous_and_bad_answer_is_none() -> None:
    script = {
        ("v0", 0): "<memory>first: red</memory><answer>A</answer>",
        ("v0", 1): "I think it is C",  # no memory block, no answer tag
        ("v0", 2): "<memory>first: red</memory><answer>Z</answer>",
    }
    policy = ScriptedPolicy(script)
    (res,) = run_memory_loop(policy, [make_qa(0, 3)])
    assert "Memory: first: red" in user_text(policy.calls[2], 0)  # M_1 carried over the bad step
    assert res.steps[1].memory_out == "first: red" and not res.steps[1].parsed.format_ok
    assert res.answers == ["A", None, None] and res.prediction is None


def test_batch_with_different_clip_counts() -> None:
    script = {
        (f"v{v}", t): f"<memory>v{v} t{t}</memory><answer>C</answer>" for v in range(2) for t in range(4)
    }
    policy = ScriptedPolicy(script)
    res = run_memory_loop(policy, [make_qa(0, 2), make_qa(1, 4)])
    assert [len(r.steps) for r in res] == [2, 4]
    assert [len(c.videos) for c in policy.calls] == [2, 2, 1, 1]
    assert "Memory: v1 t2" in user_text(policy.calls[3], 0)


def test_resume_at_a_later_clip_with_a_given_memory() -> None:
    script = {
        (f"v{v}", t): f"<memory>v{v} t{t}</memory><answer>C</answer>" for v in range(2) for t in range(4)
    }
    policy = ScriptedPolicy(script)
    res = run_memory_loop(
        policy, [make_qa(0, 3), make_qa(1, 4)], start_clip=2, memories=["carried a", "carried b"]
    )
    assert [len(r.steps) for r in res] == [1, 2]
    assert [int(v[0, 0, 0, 1]) for c in policy.calls for v in c.videos] == [2, 2, 3]  # clips 2.. only
    assert "Memory: carried a" in user_text(policy.calls[0], 0) and "Clip 3 of 3" in user_text(
        policy.calls[0], 0
    )
    assert "Memory: carried b" in user_text(policy.calls[0], 1)
    assert "Memory: v1 t2" in user_text(policy.calls[1], 0)
    assert [r.prediction for r in res] == ["C", "C"]
    with pytest.raises(ValueError, match="memories"):
        run_memory_loop(policy, [make_qa(0, 3)], start_clip=1, memories=[])


def test_memory_off_shows_empty_memory_every_step() -> None:
    script = {("v0", t): f"<memory>m{t}</memory><answer>D</answer>" for t in range(3)}
    policy = ScriptedPolicy(script)
    (res,) = run_memory_loop(policy, [make_qa(0, 3)], memory_off=True)
    assert all("Memory: (empty)" in user_text(c, 0) for c in policy.calls)
    assert res.prediction == "D"


@pytest.mark.parametrize("arch", ["qwen2_5_vl", "qwen3_vl"])
def test_real_tiny_policy_runs_the_loop(arch: str) -> None:
    from videomem.model.policy import build_policy

    policy = build_policy(arch, tiny={"hidden_size": 64, "num_hidden_layers": 1}).eval()
    m = policy.patch_multiple
    qa = make_qa(0, 2)
    qa.clips = [torch.randint(0, 255, (4, m, m, 3), dtype=torch.uint8) for _ in range(2)]
    (res,) = run_memory_loop(policy, [qa], GenerationConfig(max_new_tokens=6))
    assert len(res.steps) == 2 and all(isinstance(s.output, str) for s in res.steps)
