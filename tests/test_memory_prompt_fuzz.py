"""parse_output fuzzed with hypothesis: adversarial outputs (nested, duplicated and unclosed tags, letters
outside the options, unicode, whitespace, over-long free text) never make it raise, and what it calls
format-valid is, for multiple-choice (1..5 options) and open-ended (0 options) questions alike."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from videomem.data.types import LETTERS
from videomem.memory.prompt import MAX_ANSWER_CHARS, format_target, parse_output

TAGS = ["<memory>", "</memory>", "<answer>", "</answer>"]
NEAR_TAGS = [
    "<memory",
    "memory>",
    "</",
    "<>",
    "<answer >",
    "<ANSWER>",
    "</Memory>",
    "<<answer>>",
    "<memory/>",
]
SPACES = [" ", "\n", "\t", "\r\n", "\u00a0", "\u2003", "\u3000", ""]
LETTERISH = [*"ABCDEabcdeFZ", "AB", "A.", "(B)", "\u0410", "\uff21", "\u00e5", "1", "ß"]

WORDS = [
    "red square",
    "2 circles",
    "(empty)",
    "clip 3: blue",
    "answer",
    "memory",
    "é字🙂",
    "\x00",
    "<",
    ">",
    "/",
]
# sampled_from is cheap to draw; arbitrary unicode comes from a short st.text now and then
fragment = st.one_of(st.sampled_from(TAGS + NEAR_TAGS + SPACES + LETTERISH + WORDS), st.text(max_size=4))
adversarial = st.lists(fragment, max_size=14).map("".join)
spaces = st.lists(st.sampled_from(SPACES), max_size=3).map("".join)
NO_TAG = [f for f in NEAR_TAGS + SPACES + LETTERISH + WORDS if not any(t in f for t in TAGS)]
memory_text = (
    st.lists(st.sampled_from(NO_TAG), max_size=6).map("".join).filter(lambda m: not any(t in m for t in TAGS))
)


def _mutate(base: str, inserts: list[tuple[int, str]]) -> str:
    for pos, piece in inserts:
        pos %= len(base) + 1
        base = base[:pos] + piece + base[pos:]
    return base


well_formed_parts = st.tuples(spaces, memory_text, spaces, spaces, st.sampled_from(LETTERISH), spaces, spaces)
mutated = st.builds(
    _mutate,
    st.builds(lambda m, a: format_target(m, a), memory_text, st.sampled_from(LETTERISH)),
    st.lists(st.tuples(st.integers(0, 200), fragment), max_size=3),
)
any_output = st.one_of(adversarial, mutated)


# free text at the length bound (the well-formed open-ended test; too slow to draw 10,000 times)
long_text = st.integers(MAX_ANSWER_CHARS - 2, MAX_ANSWER_CHARS + 2).map(lambda n: "w" * n)


@pytest.mark.slow  # 10,000 examples: ~15 s
@settings(max_examples=10_000, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(text=any_output, num_options=st.integers(0, len(LETTERS)))
def test_parser_never_raises_and_format_ok_means_one_memory_and_one_valid_answer(text, num_options):
    out = parse_output(text, num_options)
    if out.answer is not None and num_options > 0:
        assert len(out.answer) == 1 and out.answer in LETTERS[:num_options]
    if out.answer is not None and num_options == 0:  # open-ended: bounded, stripped, tag-free text
        assert 0 < len(out.answer) <= MAX_ANSWER_CHARS and out.answer == out.answer.strip()
        assert not any(t in out.answer for t in TAGS)
    if out.memory is not None:
        assert not any(t in out.memory for t in TAGS) and out.memory == out.memory.strip()
    if out.format_ok:
        assert out.answer is not None and out.memory is not None
        assert text.count("<memory>") == 1 and text.count("<answer>") == 1
        assert text.strip().startswith("<memory>") and text.strip().endswith("</answer>")


@settings(max_examples=1_000, deadline=None, derandomize=True)
@given(parts=well_formed_parts, num_options=st.integers(2, len(LETTERS)))
def test_a_well_formed_output_parses_to_its_memory_and_letter(parts, num_options):
    lead, memory, mid, pre, letter, post, tail = parts
    text = f"{lead}<memory>{memory}</memory>{mid}<answer>{pre}{letter}{post}</answer>{tail}"
    out = parse_output(text, num_options)
    valid = letter.upper() in list(LETTERS[:num_options])
    assert out.memory == memory.strip()
    assert out.format_ok == valid and (out.answer == letter.upper() if valid else out.answer is None)


@pytest.mark.parametrize(
    "text", ["<memory>a</memory></memory><answer>B</answer>", "<memory>a</memory><answer>B</answer></answer>"]
)
def test_a_stray_closing_tag_is_not_format_valid(text):
    assert not parse_output(text).format_ok


@settings(max_examples=300, deadline=None, derandomize=True)
@given(parts=well_formed_parts, answer=st.one_of(memory_text, long_text))
def test_a_well_formed_open_ended_output_parses_to_its_text(parts, answer):
    lead, memory, mid, pre, _, post, tail = parts
    text = f"{lead}<memory>{memory}</memory>{mid}<answer>{pre}{answer}{post}</answer>{tail}"
    out = parse_output(text, num_options=0)
    stripped = f"{pre}{answer}{post}".strip()
    valid = 0 < len(stripped) <= MAX_ANSWER_CHARS
    assert out.memory == memory.strip()
    assert out.format_ok == valid and out.answer == (stripped if valid else None)
