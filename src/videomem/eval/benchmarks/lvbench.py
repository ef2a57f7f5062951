"""LVBench: read ``video_info.meta.jsonl``, split the options out of the question, score like the official script.

One JSON line per video: ``key`` (file ``{key}.mp4``), ``type``, ``video_info`` {``duration_minutes``,
``fps``, ``resolution``}, ``qa``: a list of {``uid``, ``question`` (the options embedded as lines
"(A) ..."), ``answer`` (letter), ``question_type`` (a LIST of categories), ``time_reference``}.

Question keys (beyond the schema's): ``question_type`` (the list, also copied to ``categories``;
``category`` is its first entry) and ``time_reference``. ``qid`` is the ``uid``, unique over the
benchmark (the official scorer keys answers by it). Video-level meta: ``video_type``,
``duration_minutes``, ``fps``.

Official aggregate (THUDM/LVBench ``compute_accuracy``): pooled accuracy over all questions, and
per-category accuracy where a question counts in EACH of its categories (so the category counts sum to
more than the number of questions).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from videomem.eval.benchmarks.common import (
    LETTERS,
    BenchVideo,
    base_score,
    grouped_accuracy,
    make_question,
    prefixed,
)

NAME = "lvbench"
RECORD_KEYS: tuple[str, ...] = ()

_OPTION_RE = re.compile(r"^\s*\(([A-E])\)\s*(.*?)\s*$")


def split_question(text: str) -> tuple[str, list[str]]:
    """Split an LVBench question into its stem and its option texts.

    ``"Which...?\\n(A) red\\n(B) blue"`` -> ``("Which...?", ["red", "blue"])``. Option lines must be
    consecutive letters from A; lines after an option that are not options continue it.

    Raises:
        ValueError: Fewer than two options, or letters out of order.
    """
    stem: list[str] = []
    options: list[str] = []
    for line in text.splitlines():
        m = _OPTION_RE.match(line)
        if m:
            if len(options) == len(LETTERS) or m.group(1) != LETTERS[len(options)]:
                raise ValueError(f"option ({m.group(1)}) out of order in {text!r}")
            options.append(m.group(2))
        elif options:
            options[-1] = f"{options[-1]} {line.strip()}".strip()
        else:
            stem.append(line)
    if len(options) < 2:
        raise ValueError(f"fewer than two '(A) ...' option lines in {text!r}")
    return "\n".join(stem).strip(), options


def read_annotations(path: str | Path) -> list[BenchVideo]:
    """Read ``video_info.meta.jsonl`` (or a directory holding it) into one ``BenchVideo`` per line.

    Raises:
        ValueError: A question whose options cannot be split or whose answer is not one of their letters.
    """
    path = Path(path)
    if path.is_dir():
        path = next(iter(sorted(path.rglob("video_info.meta.jsonl"))), path / "video_info.meta.jsonl")
    videos = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        v = json.loads(line)
        questions = []
        for qa in v["qa"]:
            stem, options = split_question(qa["question"])
            types = qa["question_type"]
            types = [types] if isinstance(types, str) else list(types)
            questions.append(
                make_question(
                    qa["uid"],
                    stem,
                    options,
                    str(qa["answer"]).strip().strip("()").upper(),
                    types[0] if types else "unknown",
                    types,
                    question_type=types,
                    time_reference=qa.get("time_reference"),
                )
            )
        info = v.get("video_info") or {}
        meta = {
            "video_type": v.get("type"),
            "duration_minutes": info.get("duration_minutes"),
            "fps": info.get("fps"),
        }
        videos.append(BenchVideo(video_name=v["key"], questions=questions, meta=meta))
    return videos


def official_score(records: list[dict]) -> dict:
    """LVBench pooled accuracy and multi-label per-category accuracy.

    Args:
        records: ``{"qid", "pred", "answer", "categories"}`` per question (categories = question_type).

    Returns:
        ``score`` (= pooled accuracy), ``accuracy``, ``n``, ``parse_failure_rate``, ``category/<type>``.
    """
    out = base_score(records, RECORD_KEYS)
    out["score"] = out["accuracy"]
    out.update(prefixed("category", grouped_accuracy(records, lambda r: r["categories"])))
    return out
