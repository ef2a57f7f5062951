"""EgoSchema (the public 500-question subset): read ``questions.json`` + ``subset_answers.json``, score accuracy.

``questions.json`` is a list of {``q_uid``, ``google_drive_id``, ``question``, ``option 0`` ..
``option 4``}; ``subset_answers.json`` maps ``q_uid`` to the correct option index. Only the questions
of the answered subset are read (the others have no public gold answer); each question has its own
video ``{q_uid}.mp4``.

Question keys: the schema's only; ``category`` is ``"egoschema"``. ``qid`` is ``q_uid``.

Official aggregate: accuracy.
"""

from __future__ import annotations

import json
from pathlib import Path

from videomem.eval.benchmarks.common import LETTERS, BenchVideo, base_score, make_question

NAME = "egoschema"
RECORD_KEYS: tuple[str, ...] = ()


def read_annotations(path: str | Path) -> list[BenchVideo]:
    """Read the EgoSchema subset into one ``BenchVideo`` per question.

    Args:
        path: The directory holding ``questions.json`` and ``subset_answers.json``, or ``questions.json``
            itself (``subset_answers.json`` is then looked for beside it).

    Raises:
        ValueError: An answer index outside the question's options.
    """
    path = Path(path)
    root = path if path.is_dir() else path.parent
    questions_file = path if path.is_file() else root / "questions.json"
    answers = json.loads((root / "subset_answers.json").read_text(encoding="utf-8"))
    videos = []
    for item in json.loads(questions_file.read_text(encoding="utf-8")):
        uid = item["q_uid"]
        if uid not in answers:
            continue
        options = [item[f"option {i}"] for i in range(len(LETTERS)) if f"option {i}" in item]
        choice = int(answers[uid])
        if not 0 <= choice < len(options):
            raise ValueError(f"question {uid!r}: answer index {choice} outside {len(options)} options")
        q = make_question(uid, item["question"], options, LETTERS[choice], NAME)
        videos.append(BenchVideo(video_name=uid, questions=[q]))
    return videos


def official_score(records: list[dict]) -> dict:
    """EgoSchema accuracy.

    Returns:
        ``score`` (= accuracy), ``accuracy``, ``n``, ``parse_failure_rate``.
    """
    out = base_score(records, RECORD_KEYS)
    out["score"] = out["accuracy"]
    return out
