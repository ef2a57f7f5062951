"""Fault corpus: a generated set of broken shards and videos through every reader; each is skipped and
counted (or refused with one line), none crashes or hangs.

Every case is its own shard: the broken item first, then (where the tar itself is readable) a good video,
so a case also shows the reader goes on past it. Each stream runs under a deadline in a thread, so a
regression to the old endless loop fails the test instead of hanging CI.
"""

from __future__ import annotations

import io
import json
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

from videomem.data.datamodule import VideoQADataModule
from videomem.data.shards import iter_shard_videoqa
from videomem.data.skips import NoUsableDataError, SkipLog
from videomem.data.video import encode_mp4

DEADLINE_S = 120


def _within(seconds: float, fn):
    """fn() in a daemon thread; fail (instead of hanging) when it is still running after `seconds`."""
    out: dict = {}

    def target() -> None:
        try:
            out["value"] = fn()
        except BaseException as err:  # re-raised in the test's thread
            out["error"] = err

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"still running after {seconds} s: bad data made the stream hang")
    if "error" in out:
        raise out["error"]
    return out["value"]


_RNG = np.random.default_rng(0)
CLIP = encode_mp4(_RNG.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8), fps=4.0)  # [F, H, W, 3]


def _question(qid: str, **over) -> dict:
    q = {"qid": qid, "question": "What?", "options": ["a", "b", "c", "d"], "answer": "B", "category": "c"}
    return {**q, **over}


def _meta(key: str, questions: list[dict] | None = None, **over) -> dict:
    meta = {"schema": 1, "video_id": key, "duration": 2.0, "clips": [[0.0, 1.0], [1.0, 2.0]]}
    return {**meta, "questions": questions if questions is not None else [_question(f"{key}-q")], **over}


def _sample(key: str, meta: dict | bytes | None = None, clips: list[bytes] | None = None) -> list:
    """Tar members (name, bytes) of one sample; meta None: no json member."""
    members = []
    if meta is not None:
        members.append((f"{key}.json", meta if isinstance(meta, bytes) else json.dumps(meta).encode()))
    for t, clip in enumerate(clips if clips is not None else [CLIP, CLIP]):
        members.append((f"{key}.{t:03d}.mp4", clip))
    return members


def _tar(members: list) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _good(key: str) -> list:
    return _sample(key, _meta(key))


# name -> (shard bytes, substring of the skip reason, good question ids the shard still yields)
# Video-level faults: the whole video is skipped; question-level faults: only that question.
_BAD_VIDEOS = {
    "undecodable_clip": (_sample("bad", _meta("bad"), [CLIP, _RNG.bytes(2048)]), "could not decode"),
    "empty_clip": (_sample("bad", _meta("bad"), [CLIP, b""]), "empty video bytes"),
    "truncated_clip": (_sample("bad", _meta("bad"), [CLIP, CLIP[: len(CLIP) // 2]]), "could not decode"),
    "missing_clip": (_sample("bad", _meta("bad"), [CLIP]), "2 spans for 1 clips"),
    "no_json": (_sample("bad", None), "no json member"),
    "malformed_json": (_sample("bad", b'{"video_id": "bad", '), "bad json"),
    "non_utf8_json": (_sample("bad", b"\xff\xfe\x00"), "bad json"),
    "json_not_object": (_sample("bad", b"[1, 2]"), "expected a json object"),
    "clips_not_list": (_sample("bad", _meta("bad", clips=5)), "clips must be a list"),
    "questions_not_list": (_sample("bad", _meta("bad", questions=5)), "questions must be a list"),
    "duration_not_number": (_sample("bad", _meta("bad", duration="long")), "duration a number"),
    "missing_questions_key": (
        _sample("bad", {k: v for k, v in _meta("bad").items() if k != "questions"}),
        "lacks 'questions'",
    ),
}
_BAD_QUESTIONS = {
    "options_null": (_question("bad-q", options=None), "options must be a list"),
    "options_not_strings": (_question("bad-q", options=[1, 2]), "options must be a list of strings"),
    "missing_options_key": ({k: v for k, v in _question("bad-q").items() if k != "options"}, "lacks"),
    "no_options": (_question("bad-q", options=[]), "0 options"),
    "one_option": (_question("bad-q", options=["a"], answer="A"), "1 options"),
    "answer_outside_options": (_question("bad-q", answer="E"), "not a letter of its options"),
    "answer_not_letter": (_question("bad-q", answer=1), "not a letter of its options"),
    "answer_two_letters": (_question("bad-q", answer="AB"), "not a letter of its options"),
    "answer_empty": (_question("bad-q", answer=""), "not a letter of its options"),
    "question_not_string": (_question("bad-q", question=None), "must be strings"),
    "memories_wrong_length": (_question("bad-q", memories=["m"]), "1 memories for 2 clips"),
}


def build_corpus(root: Path) -> dict[str, tuple[Path, str, list[str]]]:
    """Write every case as its own shard under root; also root/good.tar (two good videos)."""
    cases: dict[str, tuple[bytes, str, list[str]]] = {
        "zero_byte_tar": (b"", "unreadable tar", []),
        "empty_tar": (_tar([]), "no samples", []),
    }
    good2 = _tar(_good("t0") + _good("t1"))
    with tarfile.open(fileobj=io.BytesIO(good2)) as tar:
        at = {m.name: m for m in tar}
    # cut inside a member's data: tarfile raises; inside a header: tarfile just stops (t1 lacks clips)
    cases["truncated_tar"] = (good2[: at["t1.001.mp4"].offset_data + 200], "unreadable tar", ["t0-q"])
    cases["truncated_tar_header"] = (good2[: at["t1.000.mp4"].offset + 100], "2 spans for 0 clips", ["t0-q"])
    for name, (members, reason) in _BAD_VIDEOS.items():
        cases[name] = (_tar(members + _good("ok")), reason, ["ok-q"])
    for name, (question, reason) in _BAD_QUESTIONS.items():
        meta = _meta("mixed", [question, _question("mixed-good")])
        cases[name] = (_tar(_sample("mixed", meta) + _good("ok")), reason, ["mixed-good", "ok-q"])
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, (data, reason, qids) in cases.items():
        (root / f"{name}.tar").write_bytes(data)
        out[name] = (root / f"{name}.tar", reason, qids)
    (root / "zz_good.tar").write_bytes(_tar(_good("g0") + _good("g1")))
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("faults")
    return root, build_corpus(root)


GOOD = ["g0-q", "g1-q"]


def _read(shards, skips: SkipLog) -> list[str]:
    qas = iter_shard_videoqa(shards, frames_per_clip=2, frame_size=(32, 32), backend="decord", skips=skips)
    return [qa.qid for qa in qas]


@pytest.mark.parametrize(
    "case",
    ["zero_byte_tar", "empty_tar", "truncated_tar", "truncated_tar_header", *_BAD_VIDEOS, *_BAD_QUESTIONS],
)
def test_each_case_is_skipped_counted_and_listed_by_the_eval_reader(corpus, case):
    root, cases = corpus
    path, reason, qids = cases[case]
    skips = SkipLog()
    got = _within(DEADLINE_S, lambda: _read([str(path), str(root / "zz_good.tar")], skips))
    assert got == qids + GOOD
    assert skips.count >= 1 and any(reason in r["reason"] for r in skips.samples), skips.samples
    for r in skips.samples:
        assert r["url"] == str(path) and "\n" not in r["reason"]
    if case in _BAD_QUESTIONS:  # the question alone is skipped, the rest of its video kept
        assert [r["key"] for r in skips.samples] == ["mixed/bad-q"]
    elif case in _BAD_VIDEOS:
        assert [r["key"] for r in skips.samples] == ["bad"]
    elif case == "truncated_tar":  # the tar fault, then the video it cut short
        assert [r["key"] for r in skips.samples] == [None, "t1"]


def _expected(cases: dict) -> tuple[list[str], int]:
    """Good question ids of the corpus, and its skip events (the truncated tar: the tar and a video)."""
    qids = [q for _, (_, _, qs) in sorted(cases.items()) for q in qs]
    return qids, len(cases) + 1


def test_an_empty_shard_is_recorded_though_another_worker_skips_meanwhile():
    """With DataLoader workers the count is shared: a skip in another worker while this one reads an
    empty shard must not hide it (the empty check compares this process's own events)."""
    skips = SkipLog(shared=True)
    shards = skips.watch_shards([{"url": "empty.tar"}, {"url": "next.tar"}])
    assert next(shards) == {"url": "empty.tar"}  # ... which yields no sample
    with skips._shared.get_lock():  # another worker records a skip in the shared count
        skips._shared.value += 1
    assert next(shards) == {"url": "next.tar"}
    assert [(r["url"], r["reason"]) for r in skips.samples] == [
        ("empty.tar", "shard has no samples (empty tar)")
    ]
    assert skips.count == 2  # the other worker's and this one's


@pytest.mark.parametrize("workers", [0, 2])
def test_datamodule_eval_stream_over_the_whole_corpus(corpus, workers):
    root, cases = corpus
    dm = VideoQADataModule(
        test_shards=str(root), batch_size=3, num_workers=workers, frames_per_clip=2, frame_size=[32, 32]
    )
    got = _within(DEADLINE_S, lambda: [qa.qid for batch in dm.test_dataloader() for qa in batch])
    good, bad = _expected(cases)
    assert sorted(got) == sorted(good + GOOD)
    assert dm.skipped == bad
    if workers == 0:  # the list is per process: with workers it is in their log, the count is shared
        listed = {Path(r["url"]).stem for r in dm.skipped_samples}
        assert listed == set(cases) and {r["split"] for r in dm.skipped_samples} == {"test"}


def test_datamodule_val_limit_stream_counts_shard_faults_once_over_workers(corpus):
    root, cases = corpus
    dm = VideoQADataModule(
        val_shards=str(root),
        batch_size=4,
        num_workers=2,
        frames_per_clip=2,
        frame_size=[32, 32],
        val_limit=1000,
    )
    loader = dm.val_dataloader()  # padded with None so that DDP ranks run as many steps: left out
    got = _within(DEADLINE_S, lambda: [qa.qid for batch in loader for qa in batch if qa is not None])
    good, bad = _expected(cases)
    assert sorted(got) == sorted(good + GOOD)
    assert dm.skipped == bad  # every consumer reads every tar here: only one records the tar faults


def test_training_stream_skips_bad_data_and_keeps_training(corpus):
    root, cases = corpus
    dm = VideoQADataModule(
        train_shards=str(root), batch_size=4, frames_per_clip=2, frame_size=[32, 32], epoch_length=40,
    )  # fmt: skip
    got = _within(DEADLINE_S, lambda: [qa.qid for batch in dm.train_dataloader() for qa in batch])
    good, _ = _expected(cases)
    assert len(got) == 40 and set(got) <= set(good + GOOD)
    assert dm.skipped > 0 and all("\n" not in r["reason"] for r in dm.skipped_samples)


@pytest.mark.parametrize("workers", [0, 1])
@pytest.mark.parametrize("shards", ["zero_byte_tar", "empty_tar", "all_bad"])
def test_training_stream_without_a_usable_sample_stops_with_one_message(corpus, tmp_path, shards, workers):
    root, _ = corpus
    if shards == "all_bad":  # every video-level fault in one shard, no good video anywhere
        members = [m for name, (ms, _) in _BAD_VIDEOS.items() for m in _rename(ms, name)]
        (tmp_path / "all_bad.tar").write_bytes(_tar(members))
        urls = [str(tmp_path / "all_bad.tar")]
    else:
        urls = [str(root / f"{shards}.tar")]
    dm = VideoQADataModule(
        train_shards=urls, batch_size=2, num_workers=workers, frames_per_clip=2, frame_size=[32, 32],
        epoch_length=8,
    )  # fmt: skip
    with pytest.raises(NoUsableDataError, match="no usable sample") as info:
        _within(DEADLINE_S, lambda: next(iter(dm.train_dataloader())))
    message = str(info.value).splitlines()[-1] if workers else str(info.value)
    assert "no usable sample" in message and "skips of" in message


def _rename(members: list, key: str) -> list:
    return [(key + name[name.index(".") :], data) for name, data in members]


# --- the benchmark importer: bad video files are skipped and listed, bad annotations refused in one line


def _row(video: str, qid: str, **over) -> dict:
    row = {
        "video_id": video,
        "duration": "short",
        "domain": "d",
        "sub_category": "s",
        "url": "",
        "videoID": video,
    }
    row.update(question_id=qid, task_type="t", question="Which?", options=["A. x", "B. y", "C. z", "D. w"])
    return {**row, "answer": "B", **over}


BAD_VIDEO_FILES = {
    "zero_bytes": b"",
    "truncated": None,  # half of a good mp4 (set below)
    "random_bytes": _RNG.bytes(4096),
    "text": b"not a video at all\n",
}


@pytest.fixture(scope="module")
def bench_videos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bench_videos")
    good = encode_mp4(_RNG.integers(0, 256, (8, 24, 32, 3), dtype=np.uint8), fps=4.0)  # [F, H, W, 3]
    (root / "good.mp4").write_bytes(good)
    for name, data in BAD_VIDEO_FILES.items():
        (root / f"{name}.mp4").write_bytes(good[: len(good) // 2] if data is None else data)
    return root


def test_importer_skips_and_lists_every_bad_video_file(bench_videos, tmp_path):
    from videomem.eval.importer import import_shards

    ann = tmp_path / "ann.json"
    names = ["good", *BAD_VIDEO_FILES, "missing"]
    ann.write_text(json.dumps([_row(v, f"{v}-1") for v in names]))
    summary = _within(
        DEADLINE_S,
        lambda: import_shards(
            "videomme", ann, bench_videos, tmp_path / "out", num_clips=2, frames_per_clip=2, max_side=16
        ),
    )
    assert (summary["written"], summary["skipped"], summary["missing"]) == (1, 5, ["missing"])
    assert sorted(f["video"] for f in summary["failed"]) == sorted(BAD_VIDEO_FILES)
    assert all(f["error"] and "\n" not in f["error"] for f in summary["failed"])
    skipped = json.loads((tmp_path / "out" / "skipped.json").read_text())
    assert skipped == {"missing": ["missing"], "failed": summary["failed"]}


BAD_ANNOTATIONS = {
    "malformed_json": "[{",
    "not_a_list": "5",
    "row_without_question": json.dumps([{k: v for k, v in _row("good", "q").items() if k != "question"}]),
    "options_null": json.dumps([_row("good", "q", options=None)]),
    "no_options": json.dumps([_row("good", "q", options=[])]),
    "answer_outside_options": json.dumps([_row("good", "q", answer="E")]),
    "no_rows": "[]",
}


@pytest.mark.parametrize("case", sorted(BAD_ANNOTATIONS))
def test_importer_refuses_bad_annotations_with_one_line(bench_videos, tmp_path, capsys, case):
    from videomem.cli import main

    ann = tmp_path / "ann.json"
    ann.write_text(BAD_ANNOTATIONS[case])
    argv = [
        "shards",
        "--bench",
        "videomme",
        "--ann",
        str(ann),
        "--videos",
        str(bench_videos),
        "--out",
        str(tmp_path / "o"),
    ]
    assert main([*argv, "--clips", "2", "--max-side", "16"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("videomem shards: error: videomme annotations")
    assert str(ann) in err
    assert not list((tmp_path / "o").glob("*.tar"))
