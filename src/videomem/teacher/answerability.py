"""The answerability check: can a reader answer the question from the final memory M_T alone?

The paper checked its chains by hand. Here a reader (the writer model, or another endpoint: config
``teacher/reader``) is shown only M_T and the question: with its options, asked for a letter
(``reader_system`` / ``reader_user``), or, for an open-ended question, asked for a short answer in
words (``reader_open_system`` / ``reader_open_user``). A chain whose reader gets the answer is
``answerable``; one it cannot answer is flagged (``answerable: false`` on the question in the output
shard) and dropped by ``teacher.filter=answerable``: SFT on a last memory that does not hold the answer
teaches the policy to forget.

A multiple-choice reply is read as the benchmarks' own scripts read free text: the first option letter
standing alone (``B``, ``(B)``, ``B.``, ``Answer: B``); a reply that names none counts as not
answerable. An open-ended reply (its first non-empty line, an ``Answer:`` prefix dropped) is scored
against the reference by the rule the rewards and metrics use (``memory/scoring.py`` ``rule_score``, the
ROUGE mean) and is answerable at ``min_open_score`` or above (``teacher.min_open_score``). A question
without a gold answer is not checked (``answerable`` stays None). A reader request that fails, or a bad
reply (chain.py ``reply_problem``), fails the question (retried by the next run), so every stored chain
carries a definite flag.

This module builds no model and opens no file.
"""

from __future__ import annotations

import re

from videomem.data.types import LETTERS, VideoQA
from videomem.memory.prompt import format_options
from videomem.memory.scoring import rule_score
from videomem.teacher.chain import EMPTY, Chain, Prompts, Writer, reply_problem

#: The rule score an open-ended reply needs by default (``teacher.min_open_score`` in configs/memories.yaml)
MIN_OPEN_SCORE = 0.5
_PREFIXES = re.compile(r"(the (best|correct) (answer|option) is|answer:|option:)", re.IGNORECASE)
_ANSWER_PREFIX = re.compile(r"^\s*(?:the\s+)?answer(?:\s+is\s*:?|\s*[:\-])\s*", re.IGNORECASE)


def reader_messages(prompts: Prompts, qa: VideoQA, memory: str) -> list[dict]:
    """Messages asking the reader, given the final memory only, for the letter of a multiple-choice ``qa``
    or the words of an open-ended one."""
    if qa.options:
        system = prompts.reader_system
        user = prompts.reader_user.format(
            question=qa.question, options=format_options(qa.options), memory=memory or EMPTY
        )
    else:
        system = prompts.reader_open_system
        user = prompts.reader_open_user.format(question=qa.question, memory=memory or EMPTY)
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]


def read_words(text: str) -> str:
    """The answer a free-text reply gives: its first non-empty line, without an ``Answer:`` prefix."""
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return _ANSWER_PREFIX.sub("", line, count=1).strip()


def read_letter(text: str, num_options: int) -> str | None:
    """The option letter a free-text reply names: the first capital of the options standing alone."""
    m = re.search(rf"(?<![A-Za-z0-9])([{LETTERS[:num_options]}])(?![A-Za-z0-9])", _PREFIXES.sub(" ", text))
    return m.group(1) if m else None


def check_answers(
    chains: list[Chain],
    questions: list[VideoQA],
    reader: Writer,
    prompts: Prompts,
    min_open_score: float = MIN_OPEN_SCORE,
) -> int:
    """Ask ``reader`` every finished chain's question from its M_T; set ``answerable`` / ``reader_answer``.

    Args:
        chains: Chains of ``questions`` (same order); failed ones are left alone.
        questions: The questions (their gold answers, and options when multiple-choice).
        reader: A text backend (``Writer`` protocol).
        prompts: ``reader_system`` / ``reader_user``, ``reader_open_system`` / ``reader_open_user``.
        min_open_score: The rule score (ROUGE mean, in [0, 1]) an open-ended reply needs to count as
            answerable.

    Returns:
        The number of reader requests made.
    """
    todo = [
        i for i, (c, qa) in enumerate(zip(chains, questions)) if c.error is None and qa.answer is not None
    ]
    requests = [reader_messages(prompts, questions[i], chains[i].memories[-1]) for i in todo]
    for i, out in zip(todo, reader.write(requests) if requests else []):
        problem = f"{type(out).__name__}: {out}" if isinstance(out, Exception) else reply_problem(out)
        if problem is not None:
            chains[i].error = f"reader: {problem if isinstance(out, Exception) else 'BadReply: ' + problem}"
            continue
        qa = questions[i]
        if qa.options:
            chains[i].reader_answer = read_letter(out, len(qa.options))
            chains[i].answerable = chains[i].reader_answer == qa.answer
        else:
            chains[i].reader_answer = read_words(out)
            chains[i].answerable = rule_score(chains[i].reader_answer, qa.answer) >= min_open_score
    return len(requests)
