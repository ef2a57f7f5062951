"""The benchmark importer on fixture annotations over real tiny video files (one missing, one corrupt)."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from videomem.eval.benchmarks import videomme

FIX = Path(__file__).parent / "fixtures" / "benchmarks"
VIDEOMME_JSON = FIX / "videomme" / "videomme.json"


def test_find_video_prefers_the_task_directory_and_reports_ambiguity(tmp_path):
    from videomem.data.importers import locate

    for rel in ("video/1_plotQA/x.mp4", "video/2_needle/x.mp4", "other/y.mp4", "more/y.webm", "z.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    index = locate.index_videos(tmp_path)
    assert sorted(index) == ["x", "y"]
    path, problem = locate.find_video(index, "x", "2_needle")
    assert problem is None and path.parent.name == "2_needle"
    path, problem = locate.find_video(index, "y")
    assert path is None and problem.startswith("ambiguous: 2 files")
    assert locate.find_video(index, "nope") == (None, "missing")


@pytest.fixture(scope="module")
def videos_dir(tmp_path_factory) -> Path:
    """vidgood1.mp4 and sub/dir/vidgood2.MP4 (real H.264), vidcorrupt.mp4 (random bytes); vidmissing absent."""
    video = pytest.importorskip("videomem.data.video")
    root = tmp_path_factory.mktemp("videos")
    rng = np.random.default_rng(0)
    (root / "sub" / "dir").mkdir(parents=True)
    for rel in ("vidgood1.mp4", "sub/dir/vidgood2.MP4"):
        frames = rng.integers(0, 256, size=(16, 24, 32, 3), dtype=np.uint8)  # [F, H, W, 3], 2 s at 8 fps
        (root / rel).write_bytes(video.encode_mp4(frames, fps=8.0))
    (root / "vidcorrupt.mp4").write_bytes(rng.integers(0, 256, size=2048, dtype=np.uint8).tobytes())
    return root


def test_import_skips_missing_and_corrupt_and_shards_read_back(videos_dir, tmp_path):
    importer = pytest.importorskip("videomem.eval.importer")
    shards = pytest.importorskip("videomem.data.shards")
    out = tmp_path / "shards"
    summary = importer.import_shards(
        "videomme",
        VIDEOMME_JSON,
        videos_dir,
        out,
        num_clips=2,
        frames_per_clip=3,
        max_side=16,
        max_per_shard=1,
    )
    assert (summary["videos"], summary["written"], summary["questions"], summary["skipped"]) == (4, 2, 3, 2)
    assert summary["missing"] == ["vidmissing"]
    assert [f["video"] for f in summary["failed"]] == ["vidcorrupt"] and summary["failed"][0]["error"]
    assert json.loads((out / "skipped.json").read_text()) == {
        "missing": summary["missing"],
        "failed": summary["failed"],
    }
    # one shard per bucket (crc32 of the video id, 16 buckets for a small file)
    assert [Path(p).name for p in summary["shards"]] == ["videomme-00002-0000.tar", "videomme-00008-0000.tar"]
    with tarfile.open(summary["shards"][1]) as tar:
        assert sorted(tar.getnames()) == ["vidgood1.000.mp4", "vidgood1.001.mp4", "vidgood1.json"]
        meta = json.loads(tar.extractfile("vidgood1.json").read())
    assert meta["source"] == "videomme" and meta["schema"] == 2 and len(meta["clips"]) == 2
    assert meta["duration"] == pytest.approx(2.0, abs=0.2)
    qas = list(shards.iter_shard_videoqa(str(out), frames_per_clip=3, frame_size=None, backend="pyav"))
    assert [qa.qid for qa in qas] == ["002-1", "001-1", "001-2"]
    qa = qas[1]
    assert qa.num_clips == 2 and tuple(qa.clips[0].shape) == (3, 12, 16, 3)  # max_side 16: 24x32 -> 12x16
    assert qa.options == ["1.", "2.", "3.", "4."] and qa.answer == "C" and qa.memories is None
    assert qa.meta["duration_group"] == "short" and qa.meta["source"] == "videomme"
    # the keys the official scorer needs travel through the shards into VideoQA.meta
    records = [
        {**q.meta, "qid": q.qid, "pred": "B", "answer": q.answer, "categories": q.categories} for q in qas
    ]
    score = videomme.official_score(records)
    assert score["duration/short"] == 0.5 and score["duration/medium"] == 1.0 and score["n"] == 3


def test_cli_limit_and_nothing_found(videos_dir, tmp_path, capsys):
    importer = pytest.importorskip("videomem.eval.importer")
    argv = ["--bench", "videomme", "--ann", str(VIDEOMME_JSON), "--videos", str(videos_dir)]
    argv += ["--clips", "2", "--frames-per-clip", "2", "--max-side", "16", "--limit", "1"]
    assert importer.main([*argv, "--out", str(tmp_path / "a")]) == 0
    summary = json.loads(capsys.readouterr().out.split("\n}\n")[0] + "\n}")
    assert summary["written"] == 1 and len(summary["shards"]) == 1  # stopped after the first good shard
    empty = tmp_path / "empty"
    empty.mkdir()
    argv[argv.index(str(videos_dir))] = str(empty)
    assert importer.main([*argv, "--out", str(tmp_path / "b")]) == 1


def test_make_eval_with_bench_scores_imported_shards_officially(videos_dir, tmp_path, compose_cfg):
    """`make eval BENCH=videomme SHARDS=<imported>`: the loop runs, the official aggregate is reported."""
    from videomem.eval.importer import import_shards
    from videomem.model.policy import build_policy
    from videomem.run_eval import run

    shards = tmp_path / "shards"
    import_shards("videomme", VIDEOMME_JSON, videos_dir, shards, num_clips=2, frames_per_clip=4, max_side=32)
    ckpt = tmp_path / "policy"
    build_policy(
        "qwen2_5_vl", tiny={"hidden_size": 64, "num_hidden_layers": 1}, system_prompt=""
    ).save_pretrained(ckpt)
    out = tmp_path / "r.json"
    cfg = compose_cfg(
        "eval",
        [
            f"ckpt={ckpt}",
            f"shards={shards}",
            "bench=videomme",
            f"out={out}",
            "frames_per_clip=4",
            "frame_size=[28,28]",
            "decode.eval.max_new_tokens=4",
        ],
    )
    result = run(cfg)
    saved = json.loads(out.read_text())
    assert saved["n"] == 3 and saved["settings"]["bench"] == "videomme"
    official = saved["official"]
    assert official["n"] == 3 and set(official) >= {
        "score",
        "accuracy",
        "parse_failure_rate",
        "duration/short",
    }
    assert official["accuracy"] == pytest.approx(result["accuracy"])  # same records, same final answers
    assert out.with_suffix(".md").read_text().count("official") >= 3
