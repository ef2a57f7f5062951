"""Video-MME: read the published annotation rows, score with the official per-duration accuracy.

Published as ``videomme/test-00000-of-00001.parquet``; the same rows as a JSON list (or JSON lines) are
accepted too. Columns: ``video_id`` (e.g. "001"), ``duration`` ("short" | "medium" | "long"), ``domain``,
``sub_category``, ``url``, ``videoID`` (file ``{videoID}.mp4``), ``question_id``, ``task_type``,
``question``, ``options`` (4 strings prefixed "A. "), ``answer`` ("C").

Question keys (beyond the schema's): ``duration_group`` (the published ``duration`` string, renamed
so that ``duration`` always means seconds in this project), ``domain``, ``sub_category``, ``task_type``.
``category`` is the task type.

Official aggregate: accuracy overall and per duration group; the "long" split (30-60 min) is
``duration == "long"``. This module does not read subtitles (the project evaluates without them).
"""

from __future__ import annotations

import json
from pathlib import Path

from videomem.eval.benchmarks.common import (
    BenchVideo,
    base_score,
    group_videos,
    grouped_accuracy,
    make_question,
    prefixed,
    strip_option_prefix,
)

NAME = "videomme"
RECORD_KEYS = ("duration_group",)
DURATIONS = ("short", "medium", "long")


def _load_rows(path: Path) -> list[dict]:
    """Rows of the parquet / JSON / JSON-lines file at ``path`` (a directory: its first such file)."""
    if path.is_dir():
        found = sorted(path.rglob("*.parquet"))
        found = found or sorted([*path.rglob("*.json"), *path.rglob("*.jsonl")])
        if not found:
            raise FileNotFoundError(f"no .parquet/.json/.jsonl annotation file under {path}")
        path = found[0]
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq  # optional dependency, only needed for the parquet release

        return pq.read_table(path).to_pylist()
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return json.loads(text)


def read_annotations(path: str | Path) -> list[BenchVideo]:
    """Read Video-MME annotations (parquet, or the same rows as JSON) into one ``BenchVideo`` per video.

    Args:
        path: The parquet/JSON file, or a directory holding it.

    Returns:
        Videos in first-seen order, named by ``videoID``.

    Raises:
        ValueError: A row whose options are out of order or whose answer is not one of their letters.
    """
    items = []
    for row in _load_rows(Path(path)):
        if row["duration"] not in DURATIONS:
            raise ValueError(f"question {row['question_id']!r}: unknown duration {row['duration']!r}")
        options = [strip_option_prefix(o, i) for i, o in enumerate(row["options"])]
        q = make_question(
            row["question_id"],
            row["question"],
            options,
            str(row["answer"]).strip().upper(),
            row["task_type"],
            duration_group=row["duration"],
            domain=row.get("domain"),
            sub_category=row.get("sub_category"),
            task_type=row["task_type"],
        )
        items.append((row["videoID"], q))
    return group_videos(items)


def official_score(records: list[dict]) -> dict:
    """Video-MME accuracy overall and per duration group, plus per task type.

    Args:
        records: ``{"qid", "pred", "answer", "categories", "duration_group"}`` per question.

    Returns:
        ``score`` (= overall accuracy), ``accuracy``, ``n``, ``parse_failure_rate``,
        ``duration/short|medium|long`` and ``category/<task_type>``.
    """
    out = base_score(records, RECORD_KEYS)
    per_duration = grouped_accuracy(records, lambda r: [r["duration_group"]])
    out["score"] = out["accuracy"]
    out.update({f"duration/{d}": per_duration.get(d, float("nan")) for d in DURATIONS})
    out.update(prefixed("category", grouped_accuracy(records, lambda r: r["categories"])))
    return out
