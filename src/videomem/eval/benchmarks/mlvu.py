"""MLVU (dev): read the per-task JSON files, map answer texts to letters, score M-Avg.

Layout: ``json/<n>_<task>.json`` (the file stem names the task), videos under ``video/<n>_<task>/``.
Each file is a list of {``video``, ``duration``, ``question``, ``candidates`` (option texts),
``answer`` (the option TEXT), ``question_type``}. The two generation tasks (``8_sub_scene``,
``9_summary``) have no candidates and are not read: this module covers the multiple-choice tasks.

Answers are mapped to letters by exact match with a candidate (surrounding whitespace ignored). Two
needle items match no candidate; they are kept with ``answer=None`` ("unanswerable").

Question keys (beyond the schema's): ``task`` (also ``category``), ``question_type``, ``duration``
(seconds). ``qid`` is ``"<task>_<index in its file>"`` (MLVU has no question ids). A video is grouped
per task file (``video_id`` ``"<n>_<task>-<stem>"``, searched under ``video/<n>_<task>/`` first), so a
file name reused by two tasks never picks up the other task's video.

Official aggregate: M-Avg, the macro mean over tasks of each task's accuracy (not the pooled accuracy,
which weights tasks by their size; both are returned). Unanswerable items are treated as MLVU's own
evaluation code treats them: they stay in their task's denominator and can never be scored right (its
``qa_template`` gives them an impossible letter). ``unanswerable`` counts them.
"""

from __future__ import annotations

import json
import math
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

NAME = "mlvu"
RECORD_KEYS = ("task",)

_TASK_RE = re.compile(r"^\d+_(.+)$")


def _task_order(p: Path) -> tuple[int, str]:
    """Sort ``10_x`` after ``9_y``: by the numeric prefix, then by name."""
    head = p.stem.split("_")[0]
    return (int(head) if head.isdigit() else 10**9, p.stem)


def _json_files(path: Path) -> list[Path]:
    """The task files: ``path/json/*.json`` when ``path`` is the dataset root, else ``path/*.json``."""
    if path.is_file():
        return [path]
    root = path / "json" if (path / "json").is_dir() else path
    files = sorted(root.glob("*.json"), key=_task_order)
    if not files:
        raise FileNotFoundError(f"no MLVU task files (json/<n>_<task>.json) under {path}")
    return files


def answer_letter(answer: str, candidates: list[str]) -> str | None:
    """Letter of the candidate equal to ``answer`` (whitespace-stripped), None if none matches."""
    for i, c in enumerate(candidates):
        if str(c).strip() == str(answer).strip():
            return LETTERS[i]
    return None


def read_annotations(path: str | Path) -> list[BenchVideo]:
    """Read the MLVU dev multiple-choice tasks into ``BenchVideo`` objects, one per (task, video).

    Args:
        path: The MLVU root (holding ``json/``), the ``json`` directory, or one task file.
    """
    videos: list[BenchVideo] = []
    for f in _json_files(Path(path)):
        m = _TASK_RE.match(f.stem)
        task = m.group(1) if m else f.stem
        grouped: dict[str, list[dict]] = {}
        for i, item in enumerate(json.loads(f.read_text(encoding="utf-8"))):
            if not item.get("candidates"):
                continue  # generation task item
            q = make_question(
                f"{task}_{i}",
                item["question"],
                item["candidates"],
                answer_letter(item["answer"], item["candidates"]),
                task,
                task=task,
                question_type=item.get("question_type", task),
                duration=float(item["duration"]) if item.get("duration") is not None else None,
            )
            grouped.setdefault(Path(item["video"]).stem, []).append(q)
        videos += [
            BenchVideo(video_name=stem, questions=qs, video_id=f"{f.stem}-{stem}", subdir=f.stem)
            for stem, qs in grouped.items()
        ]
    return videos


def official_score(records: list[dict]) -> dict:
    """MLVU M-Avg (macro mean of per-task accuracies) and per-task accuracies.

    Args:
        records: ``{"qid", "pred", "answer", "categories", "task"}`` per question; ``answer`` None marks
            an unanswerable item (always wrong, kept in its task's denominator).

    Returns:
        ``score`` (= ``m_avg``), ``m_avg``, ``accuracy`` (pooled, for reference), ``n``,
        ``parse_failure_rate``, ``unanswerable`` (count), ``task/<task>``.
    """
    out = base_score(records, RECORD_KEYS)
    per_task = grouped_accuracy(records, lambda r: [r["task"]])
    out["m_avg"] = sum(per_task.values()) / len(per_task) if per_task else math.nan
    out["score"] = out["m_avg"]
    out["unanswerable"] = sum(r["answer"] is None for r in records)
    out.update(prefixed("task", per_task))
    return out
