"""The one parser (loop, rewards, evaluator) and the step prompt."""

from __future__ import annotations

import pytest

from videomem.memory.prompt import (
    MAX_ANSWER_CHARS,
    OPEN_ANSWER_REQUEST,
    SYSTEM_PROMPT,
    build_messages,
    format_target,
    parse_output,
    user_text,
)


def test_well_formed_output() -> None:
    p = parse_output("<memory>red objects so far: 2</memory><answer>B</answer>")
    assert p.memory == "red objects so far: 2" and p.answer == "B" and p.format_ok


def test_whitespace_and_lowercase_letter_tolerated() -> None:
    p = parse_output("  <memory> x </memory>\n<answer> c </answer>\n")
    assert p.memory == "x" and p.answer == "C" and p.format_ok


def test_round_trip_with_target() -> None:
    p = parse_output(format_target("first object: blue", "D"))
    assert (p.memory, p.answer, p.format_ok) == ("first object: blue", "D", True)


@pytest.mark.parametrize(
    ("text", "memory", "answer", "ok"),
    [
        ("<answer>A</answer>", None, "A", False),  # no memory block
        ("<memory>m</memory>", "m", None, False),  # no answer block
        ("<memory>m</memory><answer>A</answer><answer>B</answer>", "m", None, False),  # two answers
        ("<memory>a</memory><memory>b</memory><answer>A</answer>", None, "A", False),  # two memories
        ("<answer>A</answer><memory>m</memory>", "m", "A", False),  # wrong order
        ("<memory>m</memory><answer>E</answer>", "m", None, False),  # letter beyond 4 options
        ("<memory>m</memory><answer>AB</answer>", "m", None, False),  # not one letter
        ("<memory>m</memory><answer>the answer is A</answer>", "m", None, False),  # no free-text guessing
        ("Sure! <memory>m</memory><answer>A</answer>", "m", "A", False),  # chatter outside the blocks
        ("<memory>m<answer>A</answer>", None, "A", False),  # unclosed memory
        ("<memory>x <memory>y</memory><answer>A</answer>", None, "A", False),  # nested tag
        ("", None, None, False),
    ],
)
def test_malformed_outputs(text: str, memory: str | None, answer: str | None, ok: bool) -> None:
    p = parse_output(text)
    assert (p.memory, p.answer, p.format_ok) == (memory, answer, ok)


def test_five_options_accept_e() -> None:
    assert parse_output("<memory>m</memory><answer>E</answer>", num_options=5).answer == "E"


def test_prompt_states_clip_index_span_question_options_memory() -> None:
    text = user_text("What colour?", ["red", "green"], "", 1, 4, (8.0, 16.0))
    assert text.startswith("Clip 2 of 4 (0:08-0:16).")
    assert "A. red\nB. green" in text
    assert "Memory: (empty)" in text
    assert "Memory: seen red" in user_text("Q", ["a", "b"], "seen red", 0, 4)


def test_messages_have_one_video_item() -> None:
    msgs = build_messages("Q?", ["a", "b", "c", "d"], "m", 0, 2)
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert [c["type"] for c in msgs[1]["content"]] == ["video", "text"]


# ---- open-ended questions: num_options=0, a free-text answer ------------------------------------
@pytest.mark.parametrize(
    ("text", "answer", "ok"),
    [
        ("<memory>colours so far: red</memory><answer> red blue </answer>", "red blue", True),
        ("<memory>m</memory><answer>B</answer>", "B", True),  # a letter is just a word here
        ("<memory>m</memory><answer>  </answer>", None, False),  # empty answer
        ("<memory>m</memory><answer>" + "x" * MAX_ANSWER_CHARS + "</answer>", "x" * MAX_ANSWER_CHARS, True),
        ("<memory>m</memory><answer>" + "x" * (MAX_ANSWER_CHARS + 1) + "</answer>", None, False),  # over-long
        ("<memory>m</memory><answer>red</answer><answer>blue</answer>", None, False),  # two answers
        ("<memory>m</memory><answer>red <answer>blue</answer>", None, False),  # nested tag
        ("<memory>m</memory><answer>red</answer></answer>", "red", False),  # stray closing tag
        ("<memory>m</memory><answer>red</answer> and more", "red", False),  # chatter after the block
    ],
)
def test_open_ended_answers_are_bounded_free_text_in_one_block(text, answer, ok) -> None:
    p = parse_output(text, num_options=0)
    assert (p.answer, p.format_ok) == (answer, ok)


def test_open_ended_prompt_asks_for_words_instead_of_options() -> None:
    text = user_text("Which colours appeared, in order?", [], "colours so far: red", 2, 4)
    assert text == (
        "Clip 3 of 4.\nQuestion: Which colours appeared, in order?\n"
        f"{OPEN_ANSWER_REQUEST}\nMemory: colours so far: red"
    )
    assert "A." not in text and "no options" in SYSTEM_PROMPT
    p = parse_output(format_target("colours so far: red blue", "red blue"), num_options=0)
    assert (p.memory, p.answer, p.format_ok) == ("colours so far: red blue", "red blue", True)
