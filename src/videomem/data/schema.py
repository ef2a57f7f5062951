"""The shard meta's schema (shards.py's docstring shows it) and its checks: every json type, every version.

``validate_video`` / ``validate_question`` / ``validate_meta`` raise ``ShardFormatError`` with a one-line
reason; the readers in shards.py turn that into a counted skip. ``SCHEMA_VERSION`` is what the writer
writes, ``READABLE_SCHEMAS`` what the readers accept: schema 1 (every question multiple-choice, no
``kind``) and schema 2 (a ``kind`` per question: ``"mc"`` with 2..5 options and a gold letter, or
``"open"`` with no options and a free-text reference answer).

Deliberately not here: reading or writing tars (shards.py), decoding (video.py).
"""

from __future__ import annotations

from videomem.data.types import KINDS, LETTERS, MULTIPLE_CHOICE, OPEN_ENDED

SCHEMA_VERSION = 2
READABLE_SCHEMAS = (1, 2)  # 1: every question multiple-choice (no ``kind``)
QUESTION_KEYS = ("qid", "question", "kind", "options", "answer", "category", "categories", "memories")
VIDEO_KEYS = ("schema", "video_id", "clips", "questions")  # the rest of a meta goes to VideoQA.meta


class ShardFormatError(ValueError):
    """A sample or meta that does not follow the schema."""


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _is_str_list(x) -> bool:
    return isinstance(x, (list, tuple)) and all(isinstance(v, str) for v in x)  # tuples: before json


def validate_video(meta: dict, num_clips: int) -> None:
    """Raise ShardFormatError unless the video-level part of `meta` follows the schema (any json type)."""
    if not isinstance(meta, dict):
        raise ShardFormatError(f"meta is a {type(meta).__name__}, expected a json object")
    for k in ("video_id", "duration", "clips", "questions"):
        if k not in meta:
            raise ShardFormatError(f"meta lacks {k!r}")
    if meta.get("schema", SCHEMA_VERSION) not in READABLE_SCHEMAS:
        raise ShardFormatError(
            f"unsupported schema {meta.get('schema')!r} (this reader knows {READABLE_SCHEMAS})"
        )
    if not isinstance(meta["video_id"], str) or not _is_number(meta["duration"]):
        raise ShardFormatError(
            f"video_id must be a string and duration a number, got {meta['video_id']!r}, {meta['duration']!r}"
        )
    spans = meta["clips"]
    if not isinstance(spans, (list, tuple)) or not all(
        isinstance(s, (list, tuple)) and len(s) == 2 and all(map(_is_number, s)) for s in spans
    ):
        raise ShardFormatError(
            f"{meta['video_id']}: clips must be a list of [start_s, end_s], got {spans!r:.80}"
        )
    if len(spans) != num_clips or num_clips < 1:
        raise ShardFormatError(f"{meta['video_id']}: {len(spans)} spans for {num_clips} clips")
    if not isinstance(meta["questions"], (list, tuple)) or not all(
        isinstance(q, dict) for q in meta["questions"]
    ):
        raise ShardFormatError(f"{meta['video_id']}: questions must be a list of objects")


def validate_question(q: dict, num_clips: int) -> None:
    """Raise ShardFormatError unless question `q` follows the schema for a video of `num_clips` clips."""
    kind = q.get("kind", MULTIPLE_CHOICE)
    required = ("qid", "question", "category") + (("options",) if kind == MULTIPLE_CHOICE else ())
    missing = [k for k in required if k not in q]
    if missing:
        raise ShardFormatError(f"question {q.get('qid')!r} lacks {missing}")
    qid = q["qid"]
    if not isinstance(qid, (str, int)) or isinstance(qid, bool):
        raise ShardFormatError(f"qid must be a string, got {qid!r}")
    if not isinstance(q["question"], str) or not isinstance(q["category"], str):
        raise ShardFormatError(f"{qid}: question and category must be strings")
    if kind not in KINDS:
        raise ShardFormatError(f"{qid}: kind {kind!r} is not one of {KINDS}")
    options = q.get("options", [])
    if not _is_str_list(options):
        raise ShardFormatError(f"{qid}: options must be a list of strings, got {options!r:.80}")
    answer = q.get("answer")
    if kind == OPEN_ENDED:
        if options:
            raise ShardFormatError(f"{qid}: an open-ended question has no options, got {len(options)}")
        if answer is not None and (not isinstance(answer, str) or not answer.strip()):
            raise ShardFormatError(
                f"{qid}: the reference answer must be a non-empty string, got {answer!r:.80}"
            )
    else:
        if not 2 <= len(options) <= len(LETTERS):
            raise ShardFormatError(
                f"{qid}: {len(options)} options, expected 2..{len(LETTERS)} (an open-ended question says kind: open)"
            )
        if answer is not None and answer not in list(
            LETTERS[: len(options)]
        ):  # a list: "" and "AB" are no letters
            raise ShardFormatError(f"{qid}: answer {answer!r} is not a letter of its options")
    if q.get("categories") is not None and not _is_str_list(q["categories"]):
        raise ShardFormatError(f"{qid}: categories must be a list of strings")
    memories = q.get("memories")
    if memories is not None and not _is_str_list(memories):
        raise ShardFormatError(f"{qid}: memories must be a list of strings or null")
    if memories is not None and len(memories) != num_clips:
        raise ShardFormatError(f"{qid}: {len(memories)} memories for {num_clips} clips")


def validate_meta(meta: dict, num_clips: int) -> None:
    """Raise ShardFormatError unless `meta` (video and every question) follows the schema for `num_clips` clips."""
    validate_video(meta, num_clips)
    for q in meta["questions"]:
        validate_question(q, num_clips)


def question_count(meta: dict) -> int:
    """Number of questions a parsed meta declares (ShardFormatError if it has no list of them)."""
    questions = meta.get("questions") if isinstance(meta, dict) else None
    if not isinstance(questions, list):
        raise ShardFormatError("meta has no list of questions")
    return len(questions)
