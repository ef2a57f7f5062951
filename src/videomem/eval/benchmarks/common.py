"""What every benchmark module shares: the annotation container, question/record checks, scoring helpers.

A benchmark module turns the published annotation files into ``BenchVideo`` objects whose questions are
already in the shard schema's question form (``qid``, ``question`` without embedded options, ``options``
without letter prefixes, ``answer`` letter or None, ``category``, ``categories`` plus its own keys), and
scores *records* with the benchmark's official aggregate. A record is one answered question:
``{"qid", "pred" (letter | None), "answer" (letter | None), "categories", **benchmark keys}``; an
open-ended question (``make_open_question``: MLVU's generation tasks) has ``"kind": "open"``, no
options, a reference text as ``answer`` and a free-text ``pred``.

Scoring rule shared by all benchmarks: a record is correct iff ``pred`` is a letter equal to ``answer``.
An unparsable prediction (None) is wrong, never replaced by a random option, and a question without a
gold letter (MLVU's unanswerable needle items) can never be right. All accuracies are fractions in
[0, 1]; an empty group scores NaN.

``free_text_letter`` scores a free-text reply the way the benchmarks' own scripts do. It is deliberately
separate from ``videomem.memory.prompt.parse_output``, the strict parser used for the policy's tagged
output (training rewards and this project's evaluation).

This module reads no files and knows no benchmark.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from videomem.data.types import LETTERS

_PREFIX_RE = re.compile(r"^\s*\(?([A-E])\s*[.:)]\s*")
# The answer prefixes stripped by Video-MME's official `extract_characters_regex` (lmms-eval uses the same).
_ANSWER_PREFIXES = (
    "The best answer is",
    "The correct answer is",
    "The answer is",
    "The answer",
    "The best option is",
    "The correct option is",
    "Best answer:",
    "Best option:",
    "Answer:",
    "Option:",
    "The correct answer",
    "The correct option",
)


@dataclass
class BenchVideo:
    """One video of a benchmark with all its questions.

    Attributes:
        video_name: File stem to search for in the videos directory (``{video_name}.mp4`` etc.).
        questions: Question dicts in the shard schema's form (see module docstring).
        video_id: Unique sample id for the shards; defaults to ``video_name``.
        subdir: Name of a directory the file is expected under; used only to choose among several files
            with the same stem (MLVU keeps each task's videos in ``video/<n>_<task>/``).
        meta: Video-level extras merged into the shard meta (e.g. LVBench's video type).
    """

    video_name: str
    questions: list[dict]
    video_id: str = ""
    subdir: str | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.video_id:
            self.video_id = self.video_name


def make_question(
    qid: str,
    question: str,
    options: list[str],
    answer: str | None,
    category: str,
    categories: list[str] | None = None,
    **extra,
) -> dict:
    """A question dict in the shard schema's form, checked.

    Raises:
        ValueError: Fewer than 2 or more than 5 options, or an answer that is not one of their letters.
    """
    if not 2 <= len(options) <= len(LETTERS):
        raise ValueError(f"question {qid!r}: {len(options)} options, expected 2..{len(LETTERS)}")
    if answer is not None and answer not in LETTERS[: len(options)]:
        raise ValueError(f"question {qid!r}: answer {answer!r} is not a letter of its {len(options)} options")
    return {
        "qid": str(qid),
        "question": question.strip(),
        "options": [str(o).strip() for o in options],
        "answer": answer,
        "category": category,
        "categories": list(categories) if categories else [category],
        **extra,
    }


def make_open_question(
    qid: str,
    question: str,
    reference: str | None,
    category: str,
    categories: list[str] | None = None,
    **extra,
) -> dict:
    """An open-ended question dict in the shard schema's form: no options, the reference answer text.

    Raises:
        ValueError: A reference that is not a non-empty string.
    """
    if reference is not None and (not isinstance(reference, str) or not reference.strip()):
        raise ValueError(
            f"question {qid!r}: the reference answer must be a non-empty string, got {reference!r:.60}"
        )
    return {
        "qid": str(qid),
        "question": question.strip(),
        "kind": "open",
        "options": [],
        "answer": reference.strip() if reference is not None else None,
        "category": category,
        "categories": list(categories) if categories else [category],
        **extra,
    }


def strip_option_prefix(option: str, index: int) -> str:
    """``"A. text"`` / ``"(A) text"`` -> ``"text"`` when the letter is the one of position ``index``.

    Options without a prefix come back unchanged (stripped).

    Raises:
        ValueError: The option carries the letter of another position (the list is out of order).
    """
    m = _PREFIX_RE.match(option)
    if m is None:
        return option.strip()
    if m.group(1) != LETTERS[index]:
        raise ValueError(f"option {index} is prefixed with {m.group(1)!r}: {option!r}")
    return option[m.end() :].strip()


def group_videos(items: Iterable[tuple[str, dict]], **video_kwargs) -> list[BenchVideo]:
    """Group ``(video_name, question)`` pairs into ``BenchVideo`` objects, first-seen order."""
    grouped: dict[str, list[dict]] = {}
    for name, q in items:
        grouped.setdefault(name, []).append(q)
    return [BenchVideo(video_name=name, questions=qs, **video_kwargs) for name, qs in grouped.items()]


def check_records(records: list[dict], keys: Iterable[str] = ()) -> None:
    """Raise ``ValueError`` naming the first record without a required key or with a bad ``pred``."""
    required = ("qid", "pred", "answer", "categories", *keys)
    for r in records:
        missing = [k for k in required if k not in r]
        if missing:
            raise ValueError(f"record {r.get('qid')!r} lacks {missing}; a record needs {list(required)}")
        if r.get("kind") == "open":  # a free-text answer
            if r["pred"] is not None and not isinstance(r["pred"], str):
                raise ValueError(
                    f"record {r['qid']!r}: an open-ended pred must be text or None, got {r['pred']!r}"
                )
        elif r["pred"] is not None and (not isinstance(r["pred"], str) or r["pred"] not in LETTERS):
            raise ValueError(f"record {r['qid']!r}: pred must be a letter or None, got {r['pred']!r}")


def is_correct(record: dict) -> bool:
    """``pred`` is a letter and equals the gold ``answer`` (None never matches)."""
    return record["pred"] is not None and record["answer"] is not None and record["pred"] == record["answer"]


def accuracy(records: list[dict]) -> float:
    """Instance-weighted accuracy; NaN for no records."""
    if not records:
        return math.nan
    return sum(is_correct(r) for r in records) / len(records)


def parse_failure_rate(records: list[dict]) -> float:
    """Fraction of records whose prediction is None (unparsable); NaN for no records."""
    if not records:
        return math.nan
    return sum(r["pred"] is None for r in records) / len(records)


def grouped_accuracy(records: list[dict], groups: Callable[[dict], Iterable]) -> dict[str, float]:
    """Accuracy per group; a record counts in EACH group ``groups(record)`` returns. Keys sorted."""
    members: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        for g in groups(r):
            members[str(g)].append(r)
    return {g: accuracy(members[g]) for g in sorted(members)}


def base_score(records: list[dict], keys: Iterable[str] = ()) -> dict:
    """Check records; return ``n``, pooled ``accuracy`` and ``parse_failure_rate``."""
    check_records(records, keys)
    return {
        "n": len(records),
        "accuracy": accuracy(records),
        "parse_failure_rate": parse_failure_rate(records),
    }


def prefixed(prefix: str, values: dict[str, float]) -> dict[str, float]:
    """``{"k": v}`` -> ``{"prefix/k": v}`` (metric names are namespaced with ``/``)."""
    return {f"{prefix}/{k}": v for k, v in values.items()}


def free_text_letter(text: str, num_options: int) -> str | None:
    """The option letter a free-text reply names, by the benchmarks' documented rule.

    The rule of Video-MME's official script (also used by lmms-eval for the other benchmarks): drop the
    usual answer prefixes ("The best answer is", "Answer:", ...), then take the first option letter. Here
    the letter must stand alone (no letter or digit touching it: ``"B"``, ``"(B)"``, ``"B."``,
    ``"Answer: B"``), so the "A" inside "Apple" is not read as an answer; a capital "A" used as an article
    ("A man ...") still reads as option A, exactly as in the official rule. Only capitals of the first
    ``num_options`` letters count.

    This is NOT the parser of the policy's ``<memory>/<answer>`` output; use it only to compare with
    numbers other harnesses report on free-text replies.

    Args:
        text: The model's reply.
        num_options: Number of options of the question.

    Returns:
        The letter, or None when the reply names none (scored wrong; never a random guess).
    """
    s = text.strip()
    for p in _ANSWER_PREFIXES:
        s = s.replace(p, " ")
    letters = LETTERS[:num_options]
    m = re.search(rf"(?<![A-Za-z0-9])([{letters}])(?![A-Za-z0-9])", s)
    return m.group(1) if m else None
