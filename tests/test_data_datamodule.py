"""datamodule.py and train_stream.py: batches of VideoQA, equal epochs, each training question once per pass,
each eval question exactly once over ranks and workers, corrupt skip."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
import torch

from videomem.data.datamodule import EvalStream, VideoQADataModule, rank_and_world
from videomem.data.shards import (
    VideoQADecoder,
    VideoSample,
    expand_shards,
    iter_samples,
    read_meta,
    write_shards,
)
from videomem.data.skips import SkipLog
from videomem.data.synthetic import generate_dataset
from videomem.data.synthetic_text import MC_FAMILIES
from videomem.data.train_stream import TrainStream, index_videos, keeps
from videomem.data.types import VideoQA


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """train: 12 videos in 3 shards; val: 6 videos in 1 shard (fewer shards than workers)."""
    root = tmp_path_factory.mktemp("dm")
    generate_dataset(  # the three multiple-choice families: the counts below are 3 questions per video
        root,
        splits={"train": 12, "val": 6},
        num_clips=2,
        seed=0,
        workers=1,
        max_per_shard=4,
        families=MC_FAMILIES,
    )
    return root


def _qids(loader) -> list[str]:
    """Question ids of every batch (a validation loader pads with None: left out)."""
    out = []
    for batch in loader:
        assert isinstance(batch, list) and all(isinstance(q, VideoQA) or q is None for q in batch)
        out += [q.qid for q in batch if q is not None]
    return out


def test_train_batches_are_lists_of_videoqa_with_resized_frames(shards):
    dm = VideoQADataModule(
        train_shards=str(shards / "train"),
        batch_size=4,
        frames_per_clip=4,
        frame_size=[28, 56],
        backend="decord",
        epoch_length=10,
    )
    loader = dm.train_dataloader()
    batches = list(loader)
    assert len(loader) == len(batches) == 3  # ceil(10 / 4) batches, all full: an epoch is whole batches
    assert all(len(b) == 4 for b in batches)
    qa = batches[0][0]
    assert qa.num_clips == 2 and qa.memories is not None and len(qa.memories) == 2
    assert all(c.dtype == torch.uint8 and tuple(c.shape) == (4, 28, 56, 3) for c in qa.clips)
    assert qa.answer in "ABCD" and len(qa.options) == 4


def test_two_workers_equal_epochs_distinct_streams(shards):
    dm = VideoQADataModule(
        train_shards=str(shards / "train"),
        batch_size=4,
        num_workers=2,
        frames_per_clip=2,
        frame_size=None,
        backend="pyav",
        epoch_length=16,
    )
    loader = dm.train_dataloader()
    epoch1 = [[q.qid for q in b] for b in loader]
    epoch2 = [[q.qid for q in b] for b in loader]
    assert len(loader) == len(epoch1) == len(epoch2) == 4  # 16 / 4, each of the 2 workers gives 2 batches
    assert all(len(b) == 4 for b in epoch1 + epoch2)
    assert epoch1[0] != epoch1[1]  # batches 0 and 1 come from different workers: different seeds
    assert epoch1 != epoch2  # persistent workers move on to the next part of their stream


def test_train_stream_is_seeded(shards):
    def first_epoch(seed):
        dm = VideoQADataModule(
            train_shards=str(shards / "train"),
            batch_size=3,
            frames_per_clip=2,
            frame_size=None,
            backend="pyav",
            seed=seed,
            epoch_length=9,
        )
        return _qids(dm.train_dataloader())

    assert first_epoch(0) == first_epoch(0)
    assert first_epoch(0) != first_epoch(1)


def test_category_keep_keeps_each_family_with_its_probability():
    keep = {"count": 1.0, "first": 0.2, "shape": 0.5, "never": 0.0}
    kept = Counter(
        c
        for c in ("count", "first", "shape", "other")
        for v in range(4000)
        if keeps(keep, 3, 0, f"v{v}", 0, c)
    )
    assert kept["count"] == 4000 and kept["other"] == 4000  # probability 1, and unnamed: always kept
    assert abs(kept["first"] / 4000 - 0.2) < 0.03 and abs(kept["shape"] / 4000 - 0.5) < 0.03
    draws = [
        keeps({"count": 0.5}, seed, p, f"v{v}", 0, "count")
        for seed, p in ((3, 0), (3, 1), (4, 0))
        for v in range(64)
    ]
    assert draws[:64] != draws[64:128] and draws[:64] != draws[128:]  # a new draw per pass and per seed
    assert draws[:64] == [keeps({"count": 0.5}, 3, 0, f"v{v}", 0, "count") for v in range(64)]


def test_category_keep_in_the_training_stream(shards):
    dm = VideoQADataModule(
        train_shards=str(shards / "train"),
        batch_size=4,
        frames_per_clip=2,
        frame_size=None,
        backend="pyav",
        epoch_length=40,
        category_keep={"count": 0.0, "shape": 0.0},
    )
    batches = list(dm.train_dataloader())
    assert len(batches) == 10 and all(len(b) == 4 for b in batches)  # the epoch still fills up
    assert {qa.category for b in batches for qa in b} == {"first"}
    everything = VideoQADataModule(
        train_shards=str(shards / "train"), category_keep={"count": 0.0, "first": 0.0, "shape": 0.0}
    )
    with pytest.raises(ValueError, match="leaves no training question"):
        next(iter(everything.train_dataloader()))


def test_default_epoch_is_all_training_questions(shards):
    urls = expand_shards(str(shards / "train"))
    assert sum(len(v.categories) for v in index_videos(urls, SkipLog())) == 36  # 12 videos x 3 families
    dm = VideoQADataModule(train_shards=urls, batch_size=5, frames_per_clip=2, frame_size=None)
    assert len(dm.train_dataset()) == 40  # rounded up to whole batches


@pytest.mark.parametrize("world,workers", [(2, 2), (1, 5)])
def test_each_training_question_once_per_pass_over_ranks_and_workers(shards, world, workers):
    """Every consumer's share of a pass, read from its stream, covers every question exactly once, pass
    after pass (12 videos: shares of 3 videos each over 2 x 2, of 2 or 3 over 5); the order changes."""
    videos = index_videos(expand_shards(str(shards / "train")), SkipLog())
    decoder = VideoQADecoder(frames_per_clip=1, frame_size=[28, 28], backend="pyav")
    streams = [TrainStream(videos, decoder, r, world, 9, 3, workers, seed=1) for r in range(world)]
    consumers = [(s, s.rank * workers + w) for s in streams for w in range(workers)]
    firsts = []
    for passes in range(2):
        seen = Counter()
        for stream, c in consumers:
            before = sum(3 * len(stream.share(p, c)) for p in range(passes))
            share = 3 * len(stream.share(passes, c))
            got = [qa.qid for qa in itertools.islice(stream.questions(c, before), share)]
            seen.update(got)
            firsts.append(got[0])
        assert len(seen) == 36 and set(seen.values()) == {1}  # each question once in the pass
    assert firsts[: len(consumers)] != firsts[len(consumers) :]  # pass 1 is another shuffle


def test_two_ranks_x_two_workers_epochs_cover_each_question_once(shards, monkeypatch):
    """Through the DataLoaders: with an epoch of one pass (36 questions, shares of 9), the first epoch
    of 2 ranks x 2 workers holds every question once, the first two epochs every question twice."""
    seen = [Counter(), Counter()]
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank in range(2):
        monkeypatch.setenv("RANK", str(rank))
        dm = VideoQADataModule(
            train_shards=str(shards / "train"), batch_size=3, num_workers=2, frames_per_clip=1, frame_size=[28, 28],
            backend="pyav", epoch_length=36,
        )  # fmt: skip
        loader = dm.train_dataloader()
        for epoch in range(2):
            seen[epoch].update(_qids(loader))
    assert len(seen[0]) == 36 and set(seen[0].values()) == {1}
    assert len(seen[0] + seen[1]) == 36 and set((seen[0] + seen[1]).values()) == {2}


def test_too_few_videos_for_ranks_and_workers_is_one_clear_error(shards):
    videos = index_videos(expand_shards(str(shards / "val")), SkipLog())  # 6 videos
    decoder = VideoQADecoder(frames_per_clip=1, frame_size=None)
    with pytest.raises(ValueError, match="6 training videos for 4 ranks x 2 DataLoader workers"):
        TrainStream(videos, decoder, 0, 4, 3, 3, 2)


@pytest.mark.parametrize("split,workers", [("val", 2), ("train", 2), ("train", 0)])
def test_eval_split_yields_each_question_once(shards, split, workers):
    """1 shard over 2 workers (per-video split) and 3 shards over 2 workers (shard split)."""
    dm = VideoQADataModule(
        val_shards=str(shards / split),
        batch_size=4,
        num_workers=workers,
        frames_per_clip=2,
        frame_size=[32, 32],
        backend="decord",
    )
    qids = _qids(dm.val_dataloader())
    n_videos = 6 if split == "val" else 12
    assert len(qids) == 3 * n_videos and len(set(qids)) == len(qids)


def test_val_limit_keeps_first_questions_in_shard_order(shards):
    dm = VideoQADataModule(
        val_shards=str(shards / "val"),
        batch_size=4,
        num_workers=2,
        frames_per_clip=2,
        frame_size=None,
        backend="pyav",
        val_limit=7,
    )
    qids = _qids(dm.val_dataloader())
    order = [f"synth-val-{v:06d}-{f}" for v in range(6) for f in ("count", "first", "shape")]
    assert sorted(qids) == sorted(order[:7])


@pytest.mark.parametrize("split", ["val", "train"])
def test_two_ranks_split_without_overlap(shards, split):
    """Two DDP ranks x one worker: per-video split (1 shard) and shard split (3 shards)."""
    urls = expand_shards(str(shards / split))
    seen = Counter()
    for rank in range(2):
        decoder = VideoQADecoder(frames_per_clip=2, frame_size=None, backend="pyav")
        seen.update(q.video_id for q in EvalStream(urls, decoder, rank=rank, world=2))
    assert len(seen) == (6 if split == "val" else 12) and set(seen.values()) == {3}


@pytest.mark.parametrize("limit", [2, None])
def test_padded_validation_gives_every_rank_as_many_items(shards, limit):
    """val_limit=2 puts both questions (one video) on rank 0: padded, rank 1 still yields 2 items (None),
    so under DDP both run the same number of validation steps; the questions stay exactly once."""
    urls = expand_shards(str(shards / "train"))  # 3 shards, 12 videos
    per_rank = []
    for rank in range(2):
        decoder = VideoQADecoder(frames_per_clip=2, frame_size=None, backend="pyav")
        per_rank.append(list(EvalStream(urls, decoder, limit=limit, rank=rank, world=2, pad=True)))
    assert len(per_rank[0]) == len(per_rank[1]) == (2 if limit else 18)
    questions = [q.qid for items in per_rank for q in items if q is not None]
    assert len(questions) == len(set(questions)) == (limit or 36)
    assert per_rank[1] == [None, None] if limit else None not in per_rank[1]


def test_rank_comes_from_the_environment_without_trainer(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert rank_and_world() == (1, 4)


def test_corrupt_video_is_skipped_and_counted(shards, tmp_path, caplog):
    samples = list(iter_samples(str(shards / "val")))
    videos = []
    for i, s in enumerate(samples[:3]):
        meta = read_meta(s)
        clips = [s["000.mp4"], b"\x00garbage" if i == 1 else s["001.mp4"]]
        videos.append(VideoSample(meta["video_id"], clips, meta))
    write_shards(videos, tmp_path)
    dm = VideoQADataModule(
        val_shards=str(tmp_path), batch_size=2, frames_per_clip=2, frame_size=None, backend="decord"
    )
    qids = _qids(dm.val_dataloader())
    assert len(qids) == 6 and not any("000001" in q for q in qids)
    assert dm.skipped == 1 and "skipping video" in caplog.text


def test_transform_prepares_the_clips_in_the_workers_once_per_video(shards):
    """``transform`` (the model's frames -> patches, here a stand-in) runs in the worker process, once
    per clip of a video: the questions of one video share the prepared clips as they shared frames."""
    import os

    dm = VideoQADataModule(
        train_shards=str(shards / "train"),
        val_shards=str(shards / "val"),
        batch_size=3,
        num_workers=1,
        frames_per_clip=2,
        frame_size=[32, 32],
        epoch_length=6,
        transform=_Tagged(),
    )
    for loader in (dm.train_dataloader(), dm.val_dataloader()):
        questions = [qa for batch in loader for qa in batch]
        clips = [c for qa in questions for c in qa.clips]
        assert clips and all(isinstance(c, dict) and c["pid"] != os.getpid() for c in clips)
        by_video: dict[str, set[int]] = {}
        for qa in questions:
            by_video.setdefault(qa.video_id, set()).update(id(c) for c in qa.clips)
        assert all(len(ids) == 2 for ids in by_video.values())  # 2 clips, shared by the video's questions


class _Tagged:
    """A picklable transform that records where it ran."""

    def __call__(self, frames: torch.Tensor) -> dict:
        import os

        return {"pid": os.getpid(), "shape": tuple(frames.shape)}
