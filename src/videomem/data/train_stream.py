"""The training stream: passes over the training videos, each question once per pass, resumable anywhere.

A **pass** is one shuffle of every training video: pass p orders the videos by a permutation seeded
with (seed, p) and deals them round-robin to the C = ranks x DataLoader workers consumers (consumer c
takes videos c, c + C, c + 2C, ... of the order). So within a pass every video, and with it each of
its questions, goes to exactly one consumer once; consumers' shares differ by at most one video. A
consumer's stream is its share of pass 0, then of pass 1, and so on, without end; a Lightning epoch
(one validation interval, ``epoch_length`` questions over all consumers) is the next ``per_worker``
questions of every consumer's stream, so every rank runs the same number of steps.

The videos are found once, before training, by an index of the (local) shards that reads only their
tar headers and json members (``index_videos``); a video is then read by seeking to its members.
``category_keep`` (the training mixture) keeps question i of video v in pass p when a draw seeded by
(seed, p, v's key, i) falls below its category's probability: a pure function, so the questions a
consumer yields in any pass are known from the index alone. Hence the position of every consumer is
arithmetic: a stream can start at any question of any pass by reading the index, not the videos
(exact resume after a kill: ``TrainStream``).

What the index cannot know: a clip that fails to decode (a corrupt mp4) is found when the video is
read; the video is skipped and counted, the stream goes on with the next, and a resume computed from
the index then places the stream that video's questions early (a repeat of as many questions).

Deliberately not here: decoding (``shards.VideoQADecoder``), validation and test streams
(``datamodule.EvalStream``), where the rank comes from (``distributed.rank_and_world``).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass

from torch.utils.data import IterableDataset, get_worker_info

from videomem.data.shards import ShardFormatError, VideoQADecoder, validate_question, validate_video
from videomem.data.skips import SkipLog, StreamGuard
from videomem.data.types import VideoQA

_MEMBER = re.compile(r"^((?:.*/|)[^./]+)[.]([^/]*)$")  # key = name up to the first dot (as WebDataset)
_CLIP = re.compile(r"^\d+\.mp4$")


@dataclass(frozen=True)
class IndexedVideo:
    """One training video as the index knows it: where its members lie, and its valid questions.

    Attributes:
        url: The shard file.
        key: The sample key.
        members: ``(field, byte offset, size)`` of its json and clip members in the tar.
        categories: Category of each valid question, in the order the decoder yields them.
    """

    url: str
    key: str
    members: tuple[tuple[str, int, int], ...]
    categories: tuple[str, ...]

    def read(self) -> dict:
        """The raw sample, as WebDataset would give it (``__key__``, ``__url__``, ``json``, ``000.mp4``...)."""
        sample = {"__key__": self.key, "__url__": self.url}
        with open(self.url, "rb") as f:
            for field, offset, size in self.members:
                f.seek(offset)
                sample[field] = f.read(size)
        return sample


def _index_video(
    url: str, key: str, members: dict, data: bytes | None, skips: SkipLog
) -> IndexedVideo | None:
    """A video's index entry from its json member, or None (recorded in ``skips``) when it is unusable."""
    clips = sorted(f for f in members if _CLIP.match(f))
    try:
        if data is None:
            raise ShardFormatError(f"sample {key!r} has no json member")
        try:
            meta = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ShardFormatError(f"sample {key!r}: bad json: {err}") from err
        validate_video(meta, len(clips))
    except ShardFormatError as err:
        skips.add(key, url, f"ShardFormatError: {err}")
        return None
    categories, bad = [], []
    for q in meta["questions"]:
        try:
            validate_question(q, len(clips))
            categories.append(q["category"])
        except ShardFormatError as err:
            bad.append((q, err))
    if not categories:  # never decoded: its bad questions are recorded here (else the decoder does it)
        for q, err in bad:
            skips.add(f"{key}/{q.get('qid') if isinstance(q, dict) else q}", url, f"bad question: {err}")
        return None
    fields = ["json", *clips]
    return IndexedVideo(url, key, tuple((f, *members[f]) for f in fields), tuple(categories))


def index_videos(urls: list[str], skips: SkipLog) -> list[IndexedVideo]:
    """Every usable video of local tar shards, reading only tar headers and json members.

    An unreadable or truncated tar, a tar without samples and a video whose json breaks the schema are
    recorded in ``skips`` (the rest of the shards is indexed).

    Raises:
        ValueError: A shard is not a local file (the stream reads videos by seeking in the shards).
    """
    videos = []
    for url in urls:
        if not os.path.isfile(url):
            raise ValueError(
                f"training shard {url!r} is not a local file (training reads videos by seeking in shards)"
            )
        size, failed = os.path.getsize(url), False
        groups: dict[str, dict] = {}  # key -> {field: (offset, size)}, in tar order
        json_data: dict[str, bytes] = {}
        try:
            with tarfile.open(url) as tar:
                for member in tar:
                    m = _MEMBER.match(member.name)
                    if not member.isfile() or m is None:
                        continue
                    if member.offset_data + member.size > size:
                        raise tarfile.ReadError(f"member {member.name} is cut short")
                    key, field = m.groups()
                    groups.setdefault(key, {})[field] = (member.offset_data, member.size)
                    if field == "json":
                        json_data[key] = tar.extractfile(member).read()
        except (tarfile.TarError, OSError, EOFError) as err:
            skips.add(None, url, f"unreadable tar, rest of shard skipped: {type(err).__name__}: {err}")
            failed = True
        if not groups and not failed:
            skips.add(None, url, "shard has no samples (empty tar)")
        for key, members in groups.items():
            video = _index_video(url, key, members, json_data.get(key), skips)
            if video is not None:
                videos.append(video)
    return videos


def keeps(keep: dict[str, float] | None, seed: int, passes: int, key: str, index: int, category: str) -> bool:
    """Whether pass ``passes`` trains question ``index`` of video ``key`` (the ``category_keep`` mixture).

    Seeded by all four, so the answer is the same in every process and for any number of consumers.
    """
    p = 1.0 if keep is None else keep.get(category, 1.0)
    return p >= 1.0 or (p > 0.0 and random.Random(f"{seed}/{passes}/{key}/{index}").random() < p)


class WorkerMap:
    """Which consumer stream this DataLoader worker serves: its own, or, in the first epoch after a resume
    mid-epoch, that of worker ``(worker + offset) % workers`` (see ``TrainStream``)."""

    def __init__(self) -> None:
        self.offset = 0

    def __call__(self) -> int:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return (worker + self.offset) % workers


class TrainStream(IterableDataset):
    """The training questions of one rank (``per_worker`` per DataLoader worker per epoch), in passes.

    Every ``iter`` is one Lightning epoch. The first epoch of this object is ``start_epoch``; with
    ``skip_batches`` it starts that many batches in (exact resume after a kill). The DataLoader takes
    batch i of an epoch from worker i % W, so in that epoch worker w serves the stream of worker
    (w + skip_batches) % W (``WorkerMap``), from the question where the killed run stopped: the
    batches then come in the order the killed run would have seen them.

    Args:
        videos: The index (``index_videos``), the same on every rank.
        decoder: Raw sample -> VideoQA per valid question.
        rank, world: This process's rank and the world size.
        per_worker: Questions per epoch per worker (a whole number of batches).
        batch_size: Questions per batch.
        workers: DataLoader workers (1 for none).
        seed: Seed of the pass order and of ``category_keep``.
        category_keep: ``{category: probability}`` of training a question in a pass (None: all).
        start_epoch, skip_batches: Where the first epoch starts.
    """

    def __init__(
        self,
        videos: list[IndexedVideo],
        decoder: VideoQADecoder,
        rank: int,
        world: int,
        per_worker: int,
        batch_size: int,
        workers: int,
        seed: int = 0,
        category_keep: dict[str, float] | None = None,
        start_epoch: int = 0,
        skip_batches: int = 0,
    ) -> None:
        consumers = world * workers
        if len(videos) < consumers:
            raise ValueError(
                f"{len(videos)} training videos for {world} ranks x {workers} DataLoader workers: every "
                "rank and worker needs at least one video per pass (fewer workers, or more videos)"
            )
        self.videos, self.decoder, self.rank, self.world = videos, decoder, rank, world
        self.per_worker, self.batch_size, self.workers = per_worker, batch_size, workers
        self.seed, self.keep = seed, dict(category_keep) if category_keep else None
        self.epoch, self.skip_batches = start_epoch, skip_batches
        self.worker = WorkerMap()
        self._resuming = skip_batches > 0  # per process: each worker holds its own copy

    def __len__(self) -> int:
        return self.per_worker * self.workers

    def share(self, passes: int, consumer: int) -> list[IndexedVideo]:
        """The videos consumer ``consumer`` reads in pass ``passes``, in order."""
        order = list(range(len(self.videos)))
        random.Random(f"{self.seed}/pass/{passes}").shuffle(order)
        return [self.videos[v] for v in order[consumer :: self.world * self.workers]]

    def _kept(self, passes: int, video: IndexedVideo) -> list[int]:
        return [
            i for i, c in enumerate(video.categories) if keeps(self.keep, self.seed, passes, video.key, i, c)
        ]

    def questions(self, consumer: int, start: int = 0) -> Iterator[VideoQA]:
        """Consumer ``consumer``'s endless stream from its question ``start`` (0: the start of pass 0)."""
        passes, empty = 0, 0
        while True:  # whole passes before `start`, from the index alone
            n = sum(len(self._kept(passes, v)) for v in self.share(passes, consumer))
            empty = empty + 1 if n == 0 else 0
            if empty > 100:
                raise ValueError(f"category_keep {self.keep} leaves no training question of these shards")
            if start < n:
                break
            start, passes = start - n, passes + 1
        guard = StreamGuard(2 * len(self.videos) + 10, "the training shards", self.decoder.skips)
        for p in itertools.count(passes):
            for video in self.share(p, consumer):
                kept = self._kept(p, video)
                if start >= len(kept):  # before the starting question: not read at all
                    start -= len(kept)
                    continue
                qas = self.decoder.decode(video.read())
                guard.read(len(qas))  # stops a stream whose every video fails to decode
                yield from (qas[i] for i in kept[start:] if i < len(qas))
                start = 0

    def __iter__(self) -> Iterator[VideoQA]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        self.worker.offset, served = 0, 0
        if self._resuming:
            self._resuming = False
            self.worker.offset = self.skip_batches % self.workers
            served = len(range(self.worker(), self.skip_batches, self.workers))  # batches of its stream
        stream = self.worker()
        start = epoch * self.per_worker + served * self.batch_size
        consumer = self.rank * self.workers + stream
        return itertools.islice(self.questions(consumer, start), self.per_worker - served * self.batch_size)


def per_worker_questions(total: int, world: int, workers: int, batch_size: int) -> int:
    """Questions per worker per epoch: ``total`` over all consumers, rounded up to whole batches."""
    return max(1, math.ceil(total / (world * workers * batch_size))) * batch_size
