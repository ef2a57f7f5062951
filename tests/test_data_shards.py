"""shards.py: schema round trip, keys, shard expansion, corrupt samples."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from omegaconf import ListConfig

from videomem.data.shards import (
    SCHEMA_VERSION,
    ShardFormatError,
    VideoSample,
    clip_fields,
    expand_shards,
    iter_samples,
    iter_shard_videoqa,
    sample_to_videoqa,
    validate_question,
    write_shards,
)
from videomem.data.video import VideoDecodeError, encode_mp4


def _video(i: int, num_clips: int, corrupt: bool = False) -> VideoSample:
    """Clip t is a flat frame of grey level 40 * t + 10 * i, so every clip is recognisable."""
    clips = []
    for t in range(num_clips):
        frames = np.full((4, 32, 48, 3), 40 * t + 10 * i, np.uint8)
        clips.append(b"garbage" if corrupt and t == 1 else encode_mp4(frames, fps=2))
    meta = {
        "source": "test",
        "duration": 2.0 * num_clips,
        "clips": [[2.0 * t, 2.0 * t + 2] for t in range(num_clips)],
        "questions": [
            {
                "qid": f"v{i}.q0",
                "question": "What?",
                "options": ["a", "b", "c"],
                "answer": "B",
                "category": "x",
                "memories": [f"m{t}" for t in range(num_clips)],
                "difficulty": i,
            },
            {
                "qid": f"v{i}.q1",
                "question": "Which?",
                "options": ["a", "b"],
                "answer": None,
                "category": "y",
                "categories": ["y", "z"],
                "memories": None,
            },
        ],
        "group": "short",
    }
    return VideoSample(f"video.{i}.mp4", clips, meta)  # dots in the id: keys must replace them


def test_round_trip_three_videos(tmp_path):
    samples = [_video(i, num_clips=i + 1) for i in range(3)]
    paths = write_shards(samples, tmp_path, max_per_shard=2)
    assert [p.name for p in paths] == ["shard-000000.tar", "shard-000001.tar"]
    raw = list(iter_samples(str(tmp_path)))
    assert [r["__key__"] for r in raw] == ["video_0_mp4", "video_1_mp4", "video_2_mp4"]
    assert clip_fields(raw[2]) == ["000.mp4", "001.mp4", "002.mp4"]
    qas = list(iter_shard_videoqa(str(tmp_path), frames_per_clip=4, frame_size=None, backend="pyav"))
    assert len(qas) == 6
    for i in range(3):
        q0, q1 = qas[2 * i], qas[2 * i + 1]
        assert q0.video_id == f"video.{i}.mp4" and q0.qid == f"v{i}.q0"
        assert q0.num_clips == i + 1 and q0.spans == [(2.0 * t, 2.0 * t + 2) for t in range(i + 1)]
        assert q0.answer == "B" and q0.options == ["a", "b", "c"] and q0.categories == ["x"]
        assert q0.memories == [f"m{t}" for t in range(i + 1)]
        assert q0.meta == {"source": "test", "duration": 2.0 * (i + 1), "group": "short", "difficulty": i}
        assert q1.answer is None and q1.memories is None and q1.categories == ["y", "z"]
        assert q1.clips[0] is q0.clips[0]  # decoded once, shared by the video's questions
        for t, clip in enumerate(q0.clips):
            assert tuple(clip.shape) == (4, 32, 48, 3)
            assert abs(clip.float().mean().item() - (40 * t + 10 * i)) < 2.0


def test_resize_on_read_and_decord_backend(tmp_path):
    write_shards([_video(0, num_clips=2)], tmp_path)
    sample = next(iter(iter_samples(str(tmp_path))))
    qas = sample_to_videoqa(sample, frames_per_clip=6, frame_size=(28, 56), backend="decord")
    assert tuple(qas[0].clips[1].shape) == (6, 28, 56, 3)


def test_writer_rejects_bad_meta_and_duplicate_keys(tmp_path):
    bad = _video(0, num_clips=2)
    bad.meta["questions"][0]["answer"] = "D"  # only 3 options
    with pytest.raises(ShardFormatError, match="answer"):
        write_shards([bad], tmp_path)
    short = _video(0, num_clips=2)
    short.meta["questions"][0]["memories"] = ["one"]
    with pytest.raises(ShardFormatError, match="memories"):
        write_shards([short], tmp_path)
    a, b = _video(0, 1), _video(1, 1)
    a.video_id, b.video_id = "x.y", "x_y"  # same key after '.' -> '_'
    with pytest.raises(ShardFormatError, match="duplicate"):
        write_shards([a, b], tmp_path)


def test_corrupt_clip_is_skipped_by_reader(tmp_path):
    write_shards([_video(0, 2), _video(1, 2, corrupt=True), _video(2, 2)], tmp_path)
    qas = list(iter_shard_videoqa(str(tmp_path), frames_per_clip=2, frame_size=None, backend="pyav"))
    assert sorted({q.video_id for q in qas}) == ["video.0.mp4", "video.2.mp4"]
    with pytest.raises(VideoDecodeError):
        list(
            iter_shard_videoqa(
                str(tmp_path), frames_per_clip=2, frame_size=None, backend="pyav", skip_corrupt=False
            )
        )


def test_expand_shards_directory_glob_brace_list(tmp_path):
    for name in ("shard-000000.tar", "shard-000001.tar", "other-000000.tar"):
        (tmp_path / name).write_bytes(b"")
    d = str(tmp_path)
    assert [p.rsplit("/", 1)[1] for p in expand_shards(d)] == [
        "other-000000.tar",
        "shard-000000.tar",
        "shard-000001.tar",
    ]
    assert len(expand_shards(f"{d}/shard-*.tar")) == 2
    assert expand_shards(f"{d}/shard-{{000000..000001}}.tar") == [
        f"{d}/shard-000000.tar",
        f"{d}/shard-000001.tar",
    ]
    assert len(expand_shards([f"{d}/other-000000.tar", f"{d}/shard-*.tar"])) == 3
    assert len(expand_shards(ListConfig([d, f"{d}/other-*.tar"]))) == 4  # what Hydra passes
    with pytest.raises(ValueError):
        expand_shards(f"{d}/nothing-*.tar")


FIXTURES = Path(__file__).parent / "fixtures" / "shards"


def _open_question(**over) -> dict:
    q = {"qid": "o1", "question": "Which greys, in order?", "kind": "open", "answer": "dark light"}
    return {**q, "category": "order", **over}


def test_open_ended_question_round_trip_and_every_question_stamped_with_its_kind(tmp_path):
    video = _video(0, num_clips=2)
    video.meta["questions"].append(_open_question(options=[]))
    video.meta["questions"].append(_open_question(qid="o2", answer=None))  # no options key, unlabelled
    write_shards([video], tmp_path)
    meta = json.loads(next(iter(iter_samples(str(tmp_path))))["json"])
    assert meta["schema"] == SCHEMA_VERSION == 2
    assert [q["kind"] for q in meta["questions"]] == ["mc", "mc", "open", "open"]
    qas = list(iter_shard_videoqa(str(tmp_path), frames_per_clip=2, frame_size=None, backend="pyav"))
    assert [(q.qid, q.kind, q.options, q.answer) for q in qas[2:]] == [
        ("o1", "open", [], "dark light"),
        ("o2", "open", [], None),
    ]
    assert qas[0].kind == "mc" and "kind" not in qas[2].meta


@pytest.mark.parametrize(
    "question, error",
    [
        (_open_question(options=["a", "b"]), "has no options"),
        (_open_question(answer="  "), "non-empty string"),
        (_open_question(answer=3), "non-empty string"),
        (_open_question(kind="free"), "kind 'free'"),
        ({**_open_question(), "kind": "mc"}, "lacks \\['options'\\]"),
        ({**_open_question(options=[]), "kind": "mc"}, "0 options.*says kind: open"),
    ],
)
def test_bad_kinds_are_one_line_errors(question, error):
    with pytest.raises(ShardFormatError, match=error):
        validate_question(question, num_clips=2)


def test_a_shard_written_before_open_ended_questions_still_reads():
    """tests/fixtures/shards/schema1-000000.tar was written by the schema-1 writer (no ``kind``)."""
    raw = next(iter(iter_samples(str(FIXTURES / "schema1-000000.tar"))))
    meta = json.loads(raw["json"])
    assert meta["schema"] == 1 and "kind" not in meta["questions"][0]
    (qa,) = iter_shard_videoqa(str(FIXTURES), frames_per_clip=2, frame_size=None, skip_corrupt=False)
    assert (qa.kind, qa.options, qa.answer, qa.memories) == (
        "mc",
        ["dark", "light"],
        "B",
        ["dark seen", "dark then light"],
    )
    assert qa.meta == {"source": "test", "duration": 4.0}


def test_an_unknown_schema_version_is_refused_whole(tmp_path):
    video = _video(0, num_clips=1)
    video.meta["schema"] = 3  # the writer writes its own version whatever the meta says ...
    write_shards([video], tmp_path)
    assert json.loads(next(iter(iter_samples(str(tmp_path))))["json"])["schema"] == SCHEMA_VERSION
    sample = {"__key__": "k", "json": json.dumps({**video.meta, "video_id": "v"}), "000.mp4": b""}
    with pytest.raises(ShardFormatError, match="unsupported schema 3"):  # ... and a reader refuses others
        sample_to_videoqa(sample, frames_per_clip=2, frame_size=None)
