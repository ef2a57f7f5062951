"""Training-set annotation formats -> questions in the shard schema, read as a stream of items.

Two formats, each read by one generator of ``ImportItem``s (plan.py; build.py groups them by video):

- ``iter_jsonl``: the project's own format, one JSON object per line (docs/data.md):
  ``{"video": "rel/path.mp4", "question": str, "options": [str, ...], "answer": "B" | 1 | "text",
  "id": str?, "category": str?, "memories": [str] * T?}``. ``options`` may be left out when the
  question carries lettered lines (``A. red``); ``answer`` is a letter, a 0-based index or an option text.
  A row with neither is an open-ended question and its ``answer`` the reference text.
- ``iter_llava``: the LLaVA conversation format of LLaVA-Video-178K's files and VideoMarathon's training
  JSON: a list of ``{"id", "video", "data_source", "question_type"?, "conversations": [human, gpt,
  human, gpt, ...]}``; each human turn and its gpt reply is one question of ``<data_source>/<video>``
  (``llava_question``): multiple-choice when the turn has lettered options (the reply ``"B."`` or
  ``"D. Light pink."`` names the letter), else open-ended with the reply as the reference answer.
  VideoMarathon's ``question_type`` (a string for every turn of the record, or a list with one per
  turn), whose last ``/``-segment is ``mc`` or ``oe``, decides the kind where present (``turn_kind``).

What one row or turn becomes is decided by one function each (``jsonl_question``, ``llava_question``);
the readers around them only walk the file. A bad row or turn never stops the import: it becomes a
problem ``{"line"/"record", "field", "error"}``, reported to the reader's ``on_problem``, and is
skipped. Questions come out in the shard schema's form (``qid``, ``question`` without options, ``kind``,
``options`` without letters, ``answer`` letter or reference text, ``category``, ``categories``,
``memories``).

This module reads annotation files only: it opens no video and writes nothing. Memory does not grow
with the file: jsonl is read line by line, LLaVA's JSON list element by element (stream.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

from videomem.data.importers.plan import ImportItem
from videomem.data.importers.stream import iter_json_array
from videomem.data.types import LETTERS

FORMATS = ("jsonl", "llava")

# "A. text", "A) text", "(A) text", "A: text" at the start of a line
_OPTION_LINE = re.compile(r"^\s*\(?([A-Z])\s*[.):]\s*(.*\S)\s*$")
_ANSWER_LETTER = re.compile(r"^\s*\(?([A-Z])\s*(?:[.):]|$)")


class RowError(ValueError):
    """One annotation row that does not follow its format; ``field`` names the offending key."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field = field_name


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
        options = check_options(options) if options else []  # neither: an open-ended question
    if "answer" not in row:
        what = "a letter, a 0-based index or the option text" if options else "the reference answer text"
        raise RowError("answer", f"missing 'answer' ({what})")
    answer = resolve_answer(row["answer"], options) if options else reference_answer(row["answer"])
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
        "kind": "mc" if options else "open",
        "options": options,
        "answer": answer,
        "category": category,
        "categories": [category],
        "memories": memories,
    }
    return video.strip(), q


def iter_jsonl(path: str | Path, num_clips: int, on_problem: Callable[[dict], None]) -> Iterator[ImportItem]:
    """The questions of a jsonl annotation file (module docstring), one item each, read line by line.

    A bad line is reported to ``on_problem`` as ``{"line", "field", "error"}`` and skipped.
    """
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                on_problem({"line": line_no, "field": "json", "error": f"not valid JSON: {e}"})
                continue
            try:
                rel, q = jsonl_question(row, line_no, num_clips)
            except RowError as e:
                on_problem({"line": line_no, "field": e.field, "error": str(e)})
                continue
            yield ImportItem(video_id_of(rel), [q], {"source_path": rel}, file=rel)


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


def reference_answer(answer: object) -> str:
    """An open-ended question's reference answer: non-empty text (a number is taken as its text).

    Raises:
        RowError: Not a non-empty string or a number.
    """
    if isinstance(answer, (int, float)) and not isinstance(answer, bool):
        answer = str(answer)
    if not isinstance(answer, str) or not answer.strip():
        raise RowError("answer", f"an open-ended answer must be non-empty text, got {answer!r:.60}")
    return answer.strip()


def turn_kind(question_type: object, turn: int) -> str | None:
    """``"mc"`` / ``"open"`` from VideoMarathon's ``question_type`` for turn ``turn``, None when absent.

    Raises:
        RowError: A type that does not end in ``mc`` or ``oe``, or a list without an entry for the turn.
    """
    if question_type is None:
        return None
    if isinstance(question_type, list):
        if turn >= len(question_type):
            raise RowError("question_type", f"{len(question_type)} question types, none for turn {turn}")
        question_type = question_type[turn]
    last = str(question_type).rstrip("/").rsplit("/", 1)[-1]
    if last not in ("mc", "oe"):
        raise RowError("question_type", f"question_type {question_type!r} does not end in mc or oe")
    return "mc" if last == "mc" else "open"


def llava_question(human: str, gpt: str, qid: str, category: str, kind: str | None = None) -> dict:
    """One human turn and its gpt reply -> a question dict: multiple-choice when the turn has lettered
    options, else open-ended (the reply is the reference); ``kind`` (from ``turn_kind``) overrides.

    Raises:
        RowError: A multiple-choice turn without lettered options or question text, bad options or answer,
            or an open-ended turn without a reply.
    """
    question, options, _ = split_lettered(human)
    if kind == "open" or (kind is None and not options):
        question, options = human.replace("<image>", "").strip(), []
        if not question:
            raise RowError("question", "an empty human turn")
        answer = reference_answer(gpt)
    else:
        if not options:
            raise RowError("question_type", "a multiple-choice turn without lettered options")
        if not question:
            raise RowError("question", "no question text before the options")
        options = check_options(options)
        answer = resolve_answer(gpt, options)
    return {
        "qid": qid,
        "question": question,
        "kind": "mc" if options else "open",
        "options": options,
        "answer": answer,
        "category": category,
        "categories": [category],
        "memories": None,
    }


def llava_record(record: object, n: int, on_problem: Callable[[dict], None]) -> ImportItem | None:
    """The questions of record ``n`` of a LLaVA file as one item (None if it has none); problems reported."""
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
        on_problem({"record": rid, "field": e.field, "error": str(e)})
        return None
    questions = []
    for k, (human, gpt) in enumerate(turns):
        try:
            kind = turn_kind(record.get("question_type"), k)
            questions.append(llava_question(human, gpt, f"{rid}#{k}", source or "llava", kind))
        except RowError as e:
            on_problem({"record": rid, "turn": k, "field": e.field, "error": str(e)})
    if not questions:
        return None
    return ImportItem(video_id_of(rel), questions, {"source_path": rel, "data_source": source}, file=rel)


def iter_llava(path: str | Path, on_problem: Callable[[dict], None]) -> Iterator[ImportItem]:
    """The questions of a LLaVA conversation JSON (module docstring), one item per record, read as a
    stream (stream.py: memory does not grow with the file); the video is ``<data_source>/<video>``.

    Problems ``{"record", "field", "error"}`` go to ``on_problem``.

    Raises:
        ValueError: The file is not a JSON list (one line).
    """
    for n, record in enumerate(iter_json_array(path)):
        item = llava_record(record, n, on_problem)
        if item is not None:
            yield item


def training_items(
    fmt: str, ann: str | Path, num_clips: int
) -> Callable[[Callable[[dict], None]], Iterator[ImportItem]]:
    """The item reader of a training-set format for ``build.import_videos``.

    Raises:
        ValueError: Not one of ``FORMATS``.
    """
    if fmt == "jsonl":
        return lambda on_problem: iter_jsonl(ann, num_clips, on_problem)
    if fmt == "llava":
        return lambda on_problem: iter_llava(ann, on_problem)
    raise ValueError(f"unknown training-set format {fmt!r}; expected one of {FORMATS}")
