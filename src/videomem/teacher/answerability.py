"""The answerability check: can a reader answer the question from the final memory M_T alone?

The paper checked its chains by hand. Here a reader (the writer model, or another endpoint: config
``teacher/reader``) is shown only M_T, the question and its options, and asked for a letter. A chain
whose reader picks the gold answer is ``answerable``; one it cannot answer is flagged (``answerable:
false`` on the question in the output shard) and dropped by ``teacher.filter=answerable``: SFT on a
last memory that does not hold the answer teaches the policy to forget.

The reader's letter is read as the benchmarks' own scripts read free text: the first option letter
standing alone (``B``, ``(B)``, ``B.``, ``Answer: B``); a reply that names none counts as not
answerable. A question without a gold answer is not checked (``answerable`` stays None), nor is an
open-ended one (no letter to read; its free-text answer would need a rule or a judge of its own). A reader
request that fails, or a bad reply (chain.py ``reply_problem``), fails the question (retried by the
next run), so every stored chain carries a definite flag.

This module builds no model and opens no file.
"""

from __future__ import annotations

import re

from videomem.data.types import LETTERS, VideoQA
from videomem.memory.prompt import format_options
from videomem.teacher.chain import EMPTY, Chain, Prompts, Writer, reply_problem

_PREFIXES = re.compile(r"(the (best|correct) (answer|option) is|answer:|option:)", re.IGNORECASE)


def reader_messages(prompts: Prompts, qa: VideoQA, memory: str) -> list[dict]:
    """Messages asking the reader for the letter of ``qa`` given the final memory only."""
    user = prompts.reader_user.format(
        question=qa.question, options=format_options(qa.options), memory=memory or EMPTY
    )
    return ([{"role": "system", "content": prompts.reader_system}] if prompts.reader_system else []) + [
        {"role": "user", "content": user}
    ]


def read_letter(text: str, num_options: int) -> str | None:
    """The option letter a free-text reply names: the first capital of the options standing alone."""
    m = re.search(rf"(?<![A-Za-z0-9])([{LETTERS[:num_options]}])(?![A-Za-z0-9])", _PREFIXES.sub(" ", text))
    return m.group(1) if m else None


def check_answers(chains: list[Chain], questions: list[VideoQA], reader: Writer, prompts: Prompts) -> int:
    """Ask ``reader`` every finished chain's question from its M_T; set ``answerable`` / ``reader_answer``.

    Args:
        chains: Chains of ``questions`` (same order); failed ones are left alone.
        questions: The questions (their gold answers and options).
        reader: A text backend (``Writer`` protocol).
        prompts: ``reader_system`` / ``reader_user``.

    Returns:
        The number of reader requests made.
    """
    todo = [
        i
        for i, (c, qa) in enumerate(zip(chains, questions))
        if c.error is None and qa.answer is not None and qa.options  # multiple-choice only
    ]
    requests = [reader_messages(prompts, questions[i], chains[i].memories[-1]) for i in todo]
    for i, out in zip(todo, reader.write(requests) if requests else []):
        problem = f"{type(out).__name__}: {out}" if isinstance(out, Exception) else reply_problem(out)
        if problem is not None:
            chains[i].error = f"reader: {problem if isinstance(out, Exception) else 'BadReply: ' + problem}"
            continue
        chains[i].reader_answer = read_letter(out, len(questions[i].options))
        chains[i].answerable = chains[i].reader_answer == questions[i].answer
    return len(requests)
