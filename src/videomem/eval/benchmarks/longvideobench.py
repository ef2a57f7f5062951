"""LongVideoBench: read ``lvb_val.json``, score overall / per duration group / per category.

A JSON list of questions: ``id``, ``video_id``, ``video_path`` (file name under ``videos/``),
``question``, ``candidates`` (up to 5 option texts), ``correct_choice`` (int index), ``duration_group``
(15 | 60 | 600 | 3600 seconds), ``duration`` (seconds), ``question_category``, ``topic_category`` (and
subtitle / timestamp fields this project does not use).

Question keys (beyond the schema's): ``duration_group`` (int), ``duration``, ``question_category``
(also ``category``), ``topic_category``. ``qid`` is ``id``; the video is searched by the stem of
``video_path``.

Official aggregate: accuracy over all questions (instance-weighted, not the mean of the groups), per
duration group and per question category.
"""

from __future__ import annotations

import json
from pathlib import Path

from videomem.eval.benchmarks.common import (
    LETTERS,
    BenchVideo,
    base_score,
    group_videos,
    grouped_accuracy,
    make_question,
    prefixed,
)

NAME = "longvideobench"
RECORD_KEYS = ("duration_group",)


def read_annotations(path: str | Path) -> list[BenchVideo]:
    """Read ``lvb_val.json`` (or a directory holding it) into one ``BenchVideo`` per video file.

    Raises:
        ValueError: ``correct_choice`` outside the candidates.
    """
    path = Path(path)
    if path.is_dir():
        path = next(iter(sorted(path.rglob("lvb_val.json"))), path / "lvb_val.json")
    items = []
    for item in json.loads(path.read_text(encoding="utf-8")):
        choice = int(item["correct_choice"])
        if not 0 <= choice < len(item["candidates"]):
            raise ValueError(
                f"question {item['id']!r}: correct_choice {choice} outside {len(item['candidates'])} candidates"
            )
        q = make_question(
            item["id"],
            item["question"],
            item["candidates"],
            LETTERS[choice],
            item["question_category"],
            duration_group=int(item["duration_group"]),
            duration=float(item["duration"]) if item.get("duration") is not None else None,
            question_category=item["question_category"],
            topic_category=item.get("topic_category"),
        )
        items.append((Path(item["video_path"]).stem, q))
    return group_videos(items)


def official_score(records: list[dict]) -> dict:
    """LongVideoBench accuracy overall (instance-weighted), per duration group, per question category.

    Args:
        records: ``{"qid", "pred", "answer", "categories", "duration_group"}`` per question.

    Returns:
        ``score`` (= overall accuracy), ``accuracy``, ``n``, ``parse_failure_rate``,
        ``duration_group/<15|60|600|3600>``, ``category/<question_category>``.
    """
    out = base_score(records, RECORD_KEYS)
    out["score"] = out["accuracy"]
    groups = grouped_accuracy(records, lambda r: [int(r["duration_group"])])
    out.update(prefixed("duration_group", dict(sorted(groups.items(), key=lambda kv: int(kv[0])))))
    out.update(prefixed("category", grouped_accuracy(records, lambda r: r["categories"])))
    return out
