"""sft_steps: the SFT instances of a question, for both kinds (method.md section 2)."""

from __future__ import annotations

import pytest
import torch

from videomem.data.types import VideoQA
from videomem.memory.prompt import OPEN_ANSWER_REQUEST, parse_output
from videomem.train.sft import sft_steps


def _qa(options: list[str], answer: str | None) -> VideoQA:
    clips = [torch.zeros(2, 8, 8, 3, dtype=torch.uint8) for _ in range(3)]
    memories = ["nothing seen yet", "first colours so far: red", "first colours so far: red blue"]
    return VideoQA("v", "q", "Which colours?", options, answer, "order", clips, [(0, 1)] * 3, memories)


def test_open_ended_targets_are_the_memory_and_the_reference_at_every_step():
    steps = sft_steps(_qa([], "red blue"), system_prompt="")
    for t, (messages, frames, target) in enumerate(steps):
        text = messages[-1]["content"][1]["text"]
        assert OPEN_ANSWER_REQUEST in text and "A. " not in text
        parsed = parse_output(target, num_options=0)
        assert parsed.format_ok and parsed.answer == "red blue"  # also before the evidence (DECISION)
        assert parsed.memory == _qa([], "x").memories[t] and frames.shape == (2, 8, 8, 3)


def test_multiple_choice_targets_keep_the_gold_letter_and_unlabelled_questions_are_refused():
    (_, _, target), *_ = sft_steps(_qa(["red", "blue"], "B"))
    assert target.endswith("<answer>B</answer>")
    with pytest.raises(ValueError, match="no gold answer"):
        sft_steps(_qa([], None))
