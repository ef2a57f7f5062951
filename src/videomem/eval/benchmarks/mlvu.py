"""MLVU (dev): read the per-task JSON files, map answer texts to letters, score M-Avg and G-Avg.

Layout: ``json/<n>_<task>.json`` (the file stem names the task), videos under ``video/<n>_<task>/``.
Each file is a list of {``video``, ``duration``, ``question``, ``candidates`` (option texts),
``answer`` (the option TEXT), ``question_type``}. The two generation tasks (``8_sub_scene``,
``9_summary``) have no candidates: their items become open-ended questions whose reference is
``answer`` (sub-scene captioning also keeps its ``scoring_points``, as text).

Answers are mapped to letters by exact match with a candidate (surrounding whitespace ignored). Two
needle items match no candidate; they are kept with ``answer=None`` ("unanswerable").

Question keys (beyond the schema's): ``task`` (also ``category``), ``question_type``, ``duration``
(seconds). ``qid`` is ``"<task>_<index in its file>"`` (MLVU has no question ids). A video is grouped
per task file (``video_id`` ``"<n>_<task>-<stem>"``, searched under ``video/<n>_<task>/`` first), so a
file name reused by two tasks never picks up the other task's video.

Official aggregate: M-Avg, the macro mean over the multiple-choice tasks of each task's accuracy (not
the pooled accuracy, which weights tasks by their size; both are returned). Unanswerable items are
treated as MLVU's own evaluation code treats them: they stay in their task's denominator and can never be
scored right (its ``qa_template`` gives them an impossible letter). ``unanswerable`` counts them.

The generation tasks are scored as MLVU's own generation evaluation scores them: an LLM judge (GPT-4
in MLVU's scripts) gives each answer two integer scores from 1 to 5 (sub-scene captioning: accuracy
against the scoring points, and relevance to the question; summary: completeness and reliability against
the reference summary) and ends with a JSON dict of them; a task's score is the mean of the first plus
the mean of the second (out of 10), a score missing from a reply counting 0, and G-Avg is the mean over
the two tasks. ``judge_generation`` asks any OpenAI-compatible endpoint (``make eval ... judge=openai``)
with a rubric written after MLVU's (same criteria, scales and JSON keys, our wording) and stores the two
scores in each record; ``official_score`` then reports ``task/<task>`` and ``g_avg``. Without a judge
(or for records it could not score) only the rule fallback is reported: ``task/<task>/rule``, the ROUGE
mean against the reference (``memory.scoring``), which is not comparable with MLVU's published G-Avg.
"""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path

from videomem.eval.benchmarks.common import (
    LETTERS,
    BenchVideo,
    base_score,
    grouped_accuracy,
    make_open_question,
    make_question,
    prefixed,
)
from videomem.memory.scoring import rule_score

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
    """Read the MLVU dev tasks (multiple-choice and generation) into ``BenchVideo`` objects, one per (task, video).

    Args:
        path: The MLVU root (holding ``json/``), the ``json`` directory, or one task file.
    """
    videos: list[BenchVideo] = []
    for f in _json_files(Path(path)):
        m = _TASK_RE.match(f.stem)
        task = m.group(1) if m else f.stem
        grouped: dict[str, list[dict]] = {}
        for i, item in enumerate(json.loads(f.read_text(encoding="utf-8"))):
            keys = {
                "task": task,
                "question_type": item.get("question_type", task),
                "duration": float(item["duration"]) if item.get("duration") is not None else None,
            }
            if item.get("candidates"):
                answer = answer_letter(item["answer"], item["candidates"])
                q = make_question(f"{task}_{i}", item["question"], item["candidates"], answer, task, **keys)
            else:  # a generation task: open-ended, the reference answer as text
                if item.get("scoring_points") is not None:
                    keys["scoring_points"] = _as_text(item["scoring_points"])
                q = make_open_question(f"{task}_{i}", item["question"], item.get("answer"), task, **keys)
            grouped.setdefault(Path(item["video"]).stem, []).append(q)
        videos += [
            BenchVideo(video_name=stem, questions=qs, video_id=f"{f.stem}-{stem}", subdir=f.stem)
            for stem, qs in grouped.items()
        ]
    return videos


def _as_text(value) -> str:
    """Scoring points as one text (a list becomes one point per line)."""
    return "\n".join(map(str, value)) if isinstance(value, list) else str(value)


#: The judge's rubric per generation task, written after MLVU's (the same criteria, scales and keys).
_RUBRIC = {
    "sub_scene": (
        "You grade an answer to a question about a video against the question's scoring points. Give two "
        "integer scores from 1 to 5. ACCURACY: score each scoring point (1: the answer misses it, 3: it "
        "touches it but is not fully right, 5: it states it correctly) and average them. RELEVANCE (how the "
        "answer relates to the question, whatever its correctness): 1 off-topic, 2 partly related with much "
        "irrelevant content, 3 mostly on the question but unsure, 4 mostly on the question and confident, "
        "5 fully focused and certain. Explain your scores first, then end with a JSON dict: "
        "{'score_accuracy': a, 'score_relevance': r, 'total_score': a + r}"
    ),
    "summary": (
        "You grade a summary of a video against the standard summary. Give two integer scores from 1 to 5. "
        "COMPLETENESS (does it cover the key points and main content): 1 hardly any, 2 some but misses "
        "many, 3 most, 4 nearly all, 5 all. RELIABILITY (factual errors, misleading statements, "
        "contradictions; reasonable details absent from the standard summary cost nothing if they do not "
        "contradict it): 1 many errors and confusing, 2 several errors, 3 minor errors, 4 negligible "
        "inaccuracies and clear, 5 no errors and clear. Explain your scores first, then end with a JSON "
        "dict: {'score_completeness': c, 'score_reliability': r, 'total_score': c + r}"
    ),
}
#: The two score keys of each generation task's judge reply (MLVU's).
SCORE_KEYS = {
    "sub_scene": ("score_accuracy", "score_relevance"),
    "summary": ("score_completeness", "score_reliability"),
}


def judge_messages(record: dict) -> list[dict]:
    """The judge request for one generation-task record."""
    task = record["task"]
    if task == "sub_scene":
        user = (
            f"Question: {record['question']}\nScoring points: {record.get('scoring_points', record['answer'])}\n"
            f"Answer: {record['pred'] or ''}"
        )
    else:
        user = f"Standard summary: {record['answer']}\nSummary to grade: {record['pred'] or ''}"
    return [{"role": "system", "content": _RUBRIC[task]}, {"role": "user", "content": user}]


def parse_judge_scores(task: str, reply: str) -> list[float]:
    """The two scores of a judge reply, each read after its key (``'score_accuracy': 4``); one that is
    missing or not a number counts 0, as in MLVU's tally."""
    out = []
    for key in SCORE_KEYS[task]:
        m = re.search(rf"{key}['\"]?\s*:\s*([0-9]+(?:\.[0-9]+)?)", reply)
        out.append(float(m.group(1)) if m else 0.0)
    return out


def judge_generation(records: list[dict], endpoint, max_tokens: int = 1024) -> int:
    """Ask ``endpoint`` (a ``ChatEndpoint``) to score every generation-task record and store
    ``record["mlvu_scores"]`` (the two scores). An unparsable prediction is sent as an empty answer, as
    MLVU sends whatever a model replied. A record whose request still fails after the endpoint's retries
    is left unscored (counted in ``task/<task>/unjudged``). Returns the number of failed requests."""
    todo = [r for r in records if r.get("task") in SCORE_KEYS]
    endpoint = copy.copy(endpoint)  # the same client; room for the judge's reasoning before its scores
    endpoint.max_tokens = max_tokens
    replies = endpoint.map([judge_messages(r) for r in todo]) if todo else []
    failed = 0
    for r, reply in zip(todo, replies):
        if isinstance(reply, Exception):
            failed += 1
            continue
        r["mlvu_scores"] = parse_judge_scores(r["task"], reply)
    return failed


def generation_score(records: list[dict]) -> dict:
    """Per generation task: the rule score always; when the judge scored its records, MLVU's score (mean
    first score + mean second score, out of 10) over them and ``task/<task>/unjudged`` (requests that
    failed), and ``g_avg`` once every task present has judged records."""
    out: dict[str, float] = {}
    totals = []
    tasks = [t for t in SCORE_KEYS if any(r.get("task") == t for r in records)]
    for task in tasks:
        recs = [r for r in records if r.get("task") == task]
        out[f"task/{task}/rule"] = sum(rule_score(r["pred"], r["answer"]) for r in recs) / len(recs)
        judged = [r["mlvu_scores"] for r in recs if r.get("mlvu_scores") is not None]
        if not judged:
            continue
        first, second = (sum(s[k] for s in judged) / len(judged) for k in (0, 1))
        out[f"task/{task}/{SCORE_KEYS[task][0]}"], out[f"task/{task}/{SCORE_KEYS[task][1]}"] = first, second
        out[f"task/{task}"] = first + second
        out[f"task/{task}/unjudged"] = len(recs) - len(judged)
        totals.append(first + second)
    if totals and len(totals) == len(tasks):
        out["g_avg"] = sum(totals) / len(totals)
    return out


def official_score(records: list[dict]) -> dict:
    """MLVU M-Avg (macro mean of the multiple-choice tasks' accuracies), per-task accuracies and, when the
    set has generation tasks, their scores (``generation_score``).

    Args:
        records: ``{"qid", "pred", "answer", "categories", "task"}`` per question; ``answer`` None marks
            an unanswerable item (always wrong, kept in its task's denominator). Generation records
            have ``"kind": "open"`` (and ``mlvu_scores`` once ``judge_generation`` scored them).

    Returns:
        ``score`` (= ``m_avg``), ``m_avg``, ``accuracy`` (pooled, for reference), ``n``,
        ``parse_failure_rate``, ``unanswerable`` (count), ``task/<task>``, and for the generation
        tasks ``task/<task>/rule`` and, judged, ``task/<task>`` (out of 10) and ``g_avg``.
    """
    mc = [r for r in records if r.get("kind") != "open"]
    base_score(records, RECORD_KEYS)  # checks every record
    out = base_score(mc, RECORD_KEYS)
    per_task = grouped_accuracy(mc, lambda r: [r["task"]])
    out["m_avg"] = sum(per_task.values()) / len(per_task) if per_task else math.nan
    out["score"] = out["m_avg"]
    out["unanswerable"] = sum(r["answer"] is None for r in mc)
    out.update(prefixed("task", per_task))
    out.update(generation_score([r for r in records if r.get("kind") == "open"]))
    return out
