"""The step prompt and THE output parser of the memory loop (method.md section 1).

One clip step shows the policy an instruction, the question with lettered options (multiple-choice)
or the request to answer in its own words (open-ended), the carried memory M_{t-1} as text, which clip
this is ("clip t of T" and its time span; method.md DECISION 8) and the frames of that clip only. The
policy answers ``<memory>M_t</memory><answer>X</answer>``, X an option letter or a free-text answer of
at most ``MAX_ANSWER_CHARS`` characters.

``parse_output`` is used by the memory loop, the TCR rewards and the evaluator alike, so a format
judged valid during RL is judged valid at evaluation. It never guesses: an unparsable answer is
``None`` and counts as wrong (docs/benchmarks.md). It learns the question's kind from its number of
options: 0 means open-ended (``videomem.data.types.kind_of``).

This module builds chat *messages*; turning them into tokens is the policy's job.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from videomem.data.types import LETTERS

SYSTEM_PROMPT = (
    "You see a long video one clip at a time, never again. Keep a short memory of facts for the question. "
    "Reply <memory>...</memory><answer>X</answer> with X an option letter, or your own words when the "
    "question has no options."
)
EMPTY_MEMORY = "(empty)"
OPEN_ANSWER_REQUEST = "Answer in your own words."  # stands where the options of a multiple-choice question do
#: An open-ended answer longer than this (after stripping) is not an answer: None, scored 0 (method.md 1.6).
MAX_ANSWER_CHARS = 1000

_MEMORY_RE = re.compile(r"<memory>(.*?)</memory>", re.DOTALL)
_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_TAG_RE = re.compile(r"</?(memory|answer)>")
_STRICT_RE = re.compile(r"\s*<memory>(.*?)</memory>\s*<answer>(.*?)</answer>\s*", re.DOTALL)


@dataclass(frozen=True)
class ParsedOutput:
    """What one step's generated text says.

    Attributes:
        memory: Stripped text of the single ``<memory>`` block, or None when there is not exactly
            one well-formed block (the loop then keeps the previous memory).
        answer: Multiple-choice: the option letter inside the single ``<answer>`` block when it is one
            valid letter for this question. Open-ended: the block's stripped text when it is 1 to
            ``MAX_ANSWER_CHARS`` characters long. Else None (a parse failure, never guessed).
        format_ok: True iff the text is exactly one memory block followed by one answer block,
            with nothing but whitespace around them, and both parse.
    """

    memory: str | None
    answer: str | None
    format_ok: bool


def _single_block(pattern: re.Pattern[str], text: str) -> str | None:
    """Content of the only match of ``pattern`` in ``text``, None if zero or several or nested tags."""
    blocks = pattern.findall(text)
    if len(blocks) != 1 or _TAG_RE.search(blocks[0]):
        return None
    return blocks[0]


def parse_output(text: str, num_options: int = 4) -> ParsedOutput:
    """Parse one step's output ``<memory>M</memory><answer>X</answer>``.

    Args:
        text: Decoded completion (special tokens already stripped).
        num_options: Number of options of the question; valid letters are the first ``num_options``
            of ``LETTERS``. 0: an open-ended question, whose answer is the block's free text.

    Returns:
        The parsed memory, answer (letter or text) and format flag (see ``ParsedOutput``).
    """
    memory = _single_block(_MEMORY_RE, text)
    raw_answer = _single_block(_ANSWER_RE, text)
    answer = None
    if raw_answer is not None and num_options == 0:
        stripped = raw_answer.strip()
        answer = stripped if 0 < len(stripped) <= MAX_ANSWER_CHARS else None
    elif raw_answer is not None:
        letter = raw_answer.strip().upper()
        if len(letter) == 1 and letter in LETTERS[:num_options]:
            answer = letter
    # exactly the four tags of the two blocks: a stray opening or closing tag anywhere breaks the format
    strict = _STRICT_RE.fullmatch(text) is not None and len(_TAG_RE.findall(text)) == 4
    format_ok = strict and memory is not None and answer is not None
    return ParsedOutput(
        memory=memory.strip() if memory is not None else None, answer=answer, format_ok=format_ok
    )


def format_target(memory: str, answer: str) -> str:
    """The SFT target of one step: ``<memory>M</memory><answer>X</answer>`` (X a letter or the reference text)."""
    return f"<memory>{memory}</memory><answer>{answer}</answer>"


def format_options(options: list[str]) -> str:
    """Options as lettered lines: ``A. red``; an open-ended question (no options) asks for words instead."""
    if not options:
        return OPEN_ANSWER_REQUEST
    return "\n".join(f"{LETTERS[i]}. {text}" for i, text in enumerate(options))


def format_time(seconds: float) -> str:
    """``m:ss`` (or ``h:mm:ss``) for a clip span."""
    s = max(0, round(seconds))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def user_text(
    question: str,
    options: list[str],
    memory: str,
    clip_index: int,
    num_clips: int,
    span: tuple[float, float] | None = None,
) -> str:
    """The text part of the user turn for clip ``clip_index`` (0-based) of ``num_clips``.

    ``options`` empty: an open-ended question, whose options line asks for an answer in words.
    """
    where = f"Clip {clip_index + 1} of {num_clips}"
    if span is not None:
        where += f" ({format_time(span[0])}-{format_time(span[1])})"
    return (
        f"{where}.\nQuestion: {question}\n{format_options(options)}\nMemory: {memory.strip() or EMPTY_MEMORY}"
    )


def build_messages(
    question: str,
    options: list[str],
    memory: str,
    clip_index: int,
    num_clips: int,
    span: tuple[float, float] | None = None,
    system_prompt: str | None = SYSTEM_PROMPT,
) -> list[dict]:
    """Chat messages of one clip step; the video item stands for the frames of this clip only.

    ``system_prompt`` None means the default ``SYSTEM_PROMPT``; an empty string means no system turn.
    """
    system_prompt = SYSTEM_PROMPT if system_prompt is None else system_prompt
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return system + [
        {
            "role": "user",
            "content": [
                {"type": "video"},
                {"type": "text", "text": user_text(question, options, memory, clip_index, num_clips, span)},
            ],
        },
    ]
