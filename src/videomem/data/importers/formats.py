"""Training-set annotation formats -> questions in the shard schema, one video file per group.

Two formats, each read by one function that returns ``(videos, problems)``:

- ``read_jsonl``: the project's own format, one JSON object per line (docs/data.md):
  ``{"video": "rel/path.mp4", "question": str, "options": [str, ...], "answer": "B" | 1 | "text",
  "id": str?, "category": str?, "memories": [str] * T?}``. ``options`` may be left out when the
  question carries lettered lines (``A. red``); ``answer`` is a letter, a 0-based index or an option text.
- ``read_llava``: the LLaVA conversation format of LLaVA-Video-178K's multiple-choice files and
  VideoMarathon's training JSON: a list of ``{"id", "video", "data_source", "conversations": [human,
  gpt, human, gpt, ...]}``; each human turn with lettered options and its gpt answer (``"B."`` or
  ``"D. Light pink."``) is one question of ``<data_source>/<video>``. Turns without lettered options
  (open-ended or captioning turns) are counted in ``problems`` as ``no_options`` and skipped.

A bad row or turn never stops the import: it becomes a problem ``{"line"/"record", "field", "error"}``
and is skipped. Questions come out in the shard schema's form (``qid``, ``question`` without options,
``options`` without letters, ``answer`` letter, ``category``, ``categories``, ``memories``).

This module reads annotation files only: it opens no video and writes nothing.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from videomem.data.types import LETTERS

# "A. text", "A) text", "(A) text", "A: text" at the start of a line
_OPTION_LINE = re.compile(r"^\s*\(?([A-Z])\s*[.):]\s*(.*\S)\s*$")
_ANSWER_LETTER = re.compile(r"^\s*\(?([A-Z])\s*(?:[.):]|$)")


class RowError(ValueError):
    """One annotation row that does not follow its format; ``field`` names the offending key."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field = field_name


@dataclass
class TrainVideo:
    """One video file of a training set with its questions.

    Attributes:
        rel_path: Path of the file relative to the videos directory.
        video_id: Unique sample id (``rel_path`` with ``/`` -> ``__``, extension kept out).
        questions: Question dicts in the shard schema's form.
        meta: Video-level extras for the shard meta (``source_path``, ``data_source``).
    """

    rel_path: str
    video_id: str
    questions: list[dict] = field(default_factory=list)
    meta: dict = field(default_factory=dict)


def video_id_of(rel_path: str) -> str:
    """A sample id from a relative video path: ``"ytb/a b.mp4"`` -> ``"ytb__a b"``."""
    stem = str(Path(rel_path).with_suffix(""))
    return stem.replace("\\", "/").strip("/").replace("/", "__")


def split_lettered(text: str) -> tuple[str, list[str], str]:
    """Split a question with lettered option lines into (question, options, trailing text).

    Options are the first run of consecutive lines lettered A, B, C, ... ; the text before the run is the
    question, the text after it (e.g. "Please respond with only the letter ...") is returned separately.

    Returns:
        (question, options, rest); options is [] when the text has no run of at least two lettered lines.
    """
    lines = text.replace("<image>", "").strip().splitlines()
    for start, line in enumerate(lines):
        m = _OPTION_LINE.match(line)
        if m is None or m.group(1) != "A":
            continue
        options, end = [], start
        while end < len(lines):
            m = _OPTION_LINE.match(lines[end])
            if m is None or m.group(1) != chr(ord("A") + len(options)):
                break
            options.append(m.group(2))
            end += 1
        if len(options) >= 2:
            question = "\n".join(lines[:start]).strip()
            return question, options, "\n".join(lines[end:]).strip()
    return text.strip(), [], ""


def resolve_answer(answer: object, options: list[str]) -> str:
    """A gold answer as a letter: a letter (``"B"``, ``"B."``, ``"D. Light pink."``), a 0-based index or an option text.

    Raises:
        RowError: The answer names no option of the question.
    """
    if isinstance(answer, bool):
        raise RowError("answer", f"answer must be a letter, an index or an option text, got {answer!r}")
    if isinstance(answer, int):
        if not 0 <= answer < len(options):
            raise RowError("answer", f"index {answer} outside the {len(options)} options")
        return LETTERS[answer]
    if not isinstance(answer, str) or not answer.strip():
        raise RowError("answer", f"answer must be a letter, an index or an option text, got {answer!r}")
    text = answer.strip()
    if text in options:
        return LETTERS[options.index(text)]
    m = _ANSWER_LETTER.match(text)
    if m is None:
        raise RowError("answer", f"{answer!r} is neither an option letter nor one of the options")
    letter = m.group(1)
    if letter not in LETTERS[: len(options)]:
        raise RowError("answer", f"letter {letter!r} is not one of the {len(options)} options")
    return letter


def check_options(options: object) -> list[str]:
    """Option texts, stripped; 2..5 non-empty strings.

    Raises:
        RowError: Not a list of 2..5 non-empty strings.
    """
    if not isinstance(options, list) or not all(isinstance(o, str) and o.strip() for o in options):
        raise RowError("options", f"options must be a list of non-empty strings, got {options!r}")
    if not 2 <= len(options) <= len(LETTERS):
        raise RowError("options", f"{len(options)} options, expected 2..{len(LETTERS)}")
    return [o.strip() for o in options]


def jsonl_question(row: object, line: int, num_clips: int) -> tuple[str, dict]:
    """One jsonl row -> (video relative path, question dict).

    Raises:
        RowError: A missing or malformed field (the error names it).
    """
    if not isinstance(row, dict):
        raise RowError("row", f"a row must be a JSON object, got {type(row).__name__}")
    video = row.get("video")
    if not isinstance(video, str) or not video.strip():
        raise RowError("video", "missing or empty 'video' (a path relative to the videos directory)")
    question = row.get("question")
    if not isinstance(question, str) or not question.strip():
        raise RowError("question", "missing or empty 'question'")
    if "options" in row:
        options = check_options(row["options"])
    else:
        question, options, _ = split_lettered(question)
        if not options:
            raise RowError("options", "no 'options' list and no lettered option lines in the question")
        options = check_options(options)
    if "answer" not in row:
        raise RowError("answer", "missing 'answer' (a letter, a 0-based index or the option text)")
    answer = resolve_answer(row["answer"], options)
    memories = row.get("memories")
    if memories is not None:
        if not isinstance(memories, list) or not all(isinstance(m, str) for m in memories):
            raise RowError("memories", "memories must be a list of strings")
        if len(memories) != num_clips:
            raise RowError("memories", f"{len(memories)} memories for {num_clips} clips (CLIPS)")
    category = row.get("category", "jsonl")
    if not isinstance(category, str) or not category:
        raise RowError("category", f"category must be a non-empty string, got {category!r}")
    qid = row.get("id", f"line{line}")
    if not isinstance(qid, (str, int)):
        raise RowError("id", f"id must be a string or a number, got {qid!r}")
    q = {
        "qid": str(qid),
        "question": question.strip(),
        "options": options,
        "answer": answer,
        "category": category,
        "categories": [category],
        "memories": memories,
    }
    return video.strip(), q


def _group(items: list[tuple[str, dict, dict]]) -> list[TrainVideo]:
    """(rel_path, question, video meta) -> TrainVideo per file, first-seen order."""
    videos: dict[str, TrainVideo] = {}
    for rel, q, meta in items:
        if rel not in videos:
            videos[rel] = TrainVideo(rel_path=rel, video_id=video_id_of(rel), meta=meta)
        videos[rel].questions.append(q)
    return list(videos.values())


def read_jsonl(path: str | Path, num_clips: int) -> tuple[list[TrainVideo], list[dict]]:
    """Read a jsonl annotation file (module docstring); duplicate ids get ``#n`` suffixes.

    Returns:
        (videos in first-seen order, problems ``{"line", "field", "error"}`` of skipped rows).
    """
    items, problems, seen = [], [], {}
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                problems.append({"line": line_no, "field": "json", "error": f"not valid JSON: {e}"})
                continue
            try:
                rel, q = jsonl_question(row, line_no, num_clips)
            except RowError as e:
                problems.append({"line": line_no, "field": e.field, "error": str(e)})
                continue
            n = seen[q["qid"]] = seen.get(q["qid"], 0) + 1
            if n > 1:
                q["qid"] = f"{q['qid']}#{n}"
            items.append((rel, q, {"source_path": rel}))
    return _group(items), problems


def llava_turns(record: dict) -> list[tuple[str, str]]:
    """(human value, gpt value) pairs of a record's conversation, in order.

    Raises:
        RowError: No conversation list, or turns that do not alternate human / gpt.
    """
    conv = record.get("conversations")
    if not isinstance(conv, list) or not conv:
        raise RowError("conversations", "missing or empty 'conversations' list")
    pairs = []
    for i in range(0, len(conv) - 1, 2):
        h, g = conv[i], conv[i + 1]
        if (
            not (isinstance(h, dict) and isinstance(g, dict))
            or h.get("from") != "human"
            or g.get("from") != "gpt"
        ):
            raise RowError("conversations", f"turns {i}, {i + 1} are not a human turn then a gpt turn")
        pairs.append((str(h.get("value", "")), str(g.get("value", ""))))
    if not pairs:
        raise RowError("conversations", "no human turn followed by a gpt turn")
    return pairs


def read_llava(path: str | Path) -> tuple[list[TrainVideo], list[dict]]:
    """Read a LLaVA conversation JSON (module docstring); the video of a record is ``<data_source>/<video>``.

    Returns:
        (videos in first-seen order, problems ``{"record", "field", "error"}``; turns without lettered
        options are problems with field ``no_options``).
    """
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, list):
        raise ValueError(
            f"{path}: a LLaVA annotation file is a JSON list of records, got {type(data).__name__}"
        )
    items, problems = [], []
    for n, record in enumerate(data):
        rid = record.get("id", n) if isinstance(record, dict) else n
        try:
            if not isinstance(record, dict):
                raise RowError("record", "a record must be a JSON object")
            video = record.get("video")
            if not isinstance(video, str) or not video:
                raise RowError("video", "missing or empty 'video'")
            source = record.get("data_source") or ""
            rel = str(Path(source) / video) if source else video
            turns = llava_turns(record)
        except RowError as e:
            problems.append({"record": rid, "field": e.field, "error": str(e)})
            continue
        for k, (human, gpt) in enumerate(turns):
            question, options, _ = split_lettered(human)
            if not options:
                problems.append(
                    {"record": rid, "turn": k, "field": "no_options", "error": "no lettered options"}
                )
                continue
            try:
                if not question:
                    raise RowError("question", "no question text before the options")
                options = check_options(options)
                answer = resolve_answer(gpt, options)
            except RowError as e:
                problems.append({"record": rid, "turn": k, "field": e.field, "error": str(e)})
                continue
            category = source or "llava"
            q = {
                "qid": f"{rid}#{k}",
                "question": question,
                "options": options,
                "answer": answer,
                "category": category,
                "categories": [category],
                "memories": None,
            }
            items.append((rel, q, {"source_path": rel, "data_source": source}))
    return _group(items), problems
