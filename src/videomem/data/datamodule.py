"""LightningDataModule that streams WebDataset video shards (shards.py schema) as lists of VideoQA.

Training: resampled shards (each rank and DataLoader worker draws shards from its own seeded stream:
wds.ResampledShards(deterministic=True) seeded with rank * 1000 + worker, the seed and the epoch), a seeded
sample shuffle over raw (still encoded) videos, decoding in the workers, then `with_epoch` so every
rank and worker yields the same number of questions: DDP ranks never wait on each other at epoch end.
Rank and worker splitting is implicit in the per-(rank, worker) resampling seeds. A pass (epoch) of
the stream depends on the seeds and its index alone, so the datamodule's ``state_dict`` (pass, batches
consumed) is all a Lightning checkpoint needs to resume it exactly (``TrainStream``): the resumed run
decodes and drops the consumed part of the pass (a few seconds for a whole tiny-default SFT epoch).

Validation / test: deterministic and unshuffled, every question exactly once over all ranks and
workers. When there are at least as many shards as consumers (ranks x workers) the shards are split
(as wds.split_by_node then wds.split_by_worker would, with the rank fixed in the main process, see
WorkerSeed); otherwise (a 64-video val set is one shard) every consumer
reads all shards and keeps videos v with v % consumers == its index. `val_limit` keeps the first N
questions in shard order (it forces the per-video split, so the N are the same for any worker count).
Ranks may then get unequal counts of questions; validation pads every rank's share with ``None`` up to
the largest (``EvalStream(pad=True)``), so every rank runs the same number of validation steps and the
collectives inside them line up. Log validation metrics through torchmetrics (synced once at epoch
end), not with per-step collectives. The stream is `EvalStream` (data/eval_stream.py), which `make
eval` also reads, by chunks of questions (`eval_stream`).

Bad data never stops or hangs a run: a video that fails to parse or decode, a question that breaks the
schema, an empty shard and the rest of a truncated tar are skipped with a warning and counted
(`skipped`: every process, DataLoader workers included; `skipped_samples`: the list, this process).
The endless training stream stops with one `NoUsableDataError` when thousands of reads in a row give
no question (skips.py: StreamGuard), e.g. when every training shard is empty.

Batches are plain lists of VideoQA (the model layer tokenizes and patches); a batch may hold several
questions of one video, sharing its frames.

Deliberately not here: tokenisation, model-specific resizing rules (pass `frame_size`), writing shards.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import random
import tarfile
import warnings
from collections.abc import Iterator

import lightning as L
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from videomem.data.distributed import rank_and_world
from videomem.data.eval_stream import EvalStream
from videomem.data.shards import (
    ShardFormatError,
    VideoQADecoder,
    expand_shards,
    question_count,
)
from videomem.data.skips import SkipLog, StreamGuard
from videomem.data.types import VideoQA

log = logging.getLogger(__name__)


def collate_videoqa(batch: list[VideoQA]) -> list[VideoQA]:
    """Identity collate: a batch is a plain list of VideoQA (no tensor stacking)."""
    return list(batch)


def count_questions(urls: list[str]) -> int:
    """Number of questions in local shards, reading only their json members (seeks over the mp4s).

    An empty, truncated or unreadable tar and a json member that does not parse count what could be
    read (the training stream skips and counts them when it meets them).
    """
    total = 0
    for url in urls:
        if not os.path.isfile(url):
            raise ValueError(f"cannot count questions of non-local shard {url!r}: set epoch_length")
        try:
            with tarfile.open(url) as tar:
                for member in tar:
                    if member.name.endswith(".json"):
                        try:
                            total += question_count(json.load(tar.extractfile(member)))
                        except (ShardFormatError, ValueError):  # JSONDecodeError, UnicodeDecodeError
                            continue
        except (tarfile.TarError, OSError, EOFError):
            continue
    return total


def _worker() -> tuple[int, int]:
    info = get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


class WorkerMap:
    """Which worker's stream this DataLoader worker serves: its own, or, in the first pass after a resume
    mid-pass, that of worker ``(worker + offset) % workers`` (see ``TrainStream``)."""

    def __init__(self) -> None:
        self.offset = 0

    def __call__(self) -> int:
        worker, workers = _worker()
        return (worker + self.offset) % workers


class WorkerSeed:
    """Picklable seed of a (rank, worker) stream: rank * 1000 + worker, as wds.pytorch_worker_seed.

    The rank is fixed in the main process: inside a spawned worker torch.distributed is not initialised,
    and webdataset's own lookup would give every rank the same stream.
    """

    def __init__(self, rank: int, worker: WorkerMap | None = None) -> None:
        self.rank = rank
        self.worker = worker or WorkerMap()

    def __call__(self) -> int:
        return self.rank * 1000 + self.worker()


class CategoryKeep:
    """Pipeline stage that keeps a training question of category c with probability ``keep[c]``.

    A mixture knob (like dataset weights in an LLM recipe): spend the training budget where a family
    gives signal. Categories not named are always kept. Seeded per (seed, rank, worker, pass), so a run
    is reproducible. Evaluation never goes through it.
    """

    def __init__(
        self,
        keep: dict[str, float],
        seed: int = 0,
        rank: int = 0,
        worker: WorkerMap | None = None,
        passes: int = 0,
    ) -> None:
        if not all(0.0 <= p <= 1.0 for p in keep.values()):
            raise ValueError(f"keep probabilities must lie in [0, 1], got {keep}")
        self.keep = dict(keep)
        self.seed, self.rank, self.passes = seed, rank, passes
        self.worker = worker or WorkerMap()

    #: Consecutive dropped questions after which the keep map is taken to drop everything (the resampled
    #: training stream is endless, so it would otherwise spin without ever filling a batch).
    max_dropped_in_a_row = 10_000

    def __call__(self, questions: Iterator[VideoQA]) -> Iterator[VideoQA]:
        rng = random.Random(f"{self.seed}/{self.rank}/{self.worker()}/{self.passes}")
        self.passes += 1
        dropped = 0
        for qa in questions:
            if rng.random() < self.keep.get(qa.category, 1.0):
                dropped = 0
                yield qa
            else:
                dropped += 1
                if dropped >= self.max_dropped_in_a_row:
                    raise ValueError(
                        f"category_keep {self.keep} dropped {dropped} training questions in a row: it "
                        "leaves no category of these shards with a probability > 0"
                    )


class TrainStream(IterableDataset):
    """The training pipeline of one (rank, worker): one pass (a Lightning "epoch") per ``iter``, able to
    start in the middle of a pass (exact resume after a kill).

    Pass p of every stream is fixed by the seeds and p alone (ResampledShards, detshuffle and
    CategoryKeep are re-seeded per pass, nothing else carries over), so the state of the whole
    training stream is (pass, batches consumed in it). The first pass of this object is
    ``start_pass``, and in it each worker first drops (decodes and discards) what it had served of the
    first ``skip_batches`` batches. The DataLoader takes batch i of a pass from worker i % W, so in that
    pass worker w serves the stream of worker (w + skip_batches) % W (``WorkerMap``): the batches then
    come in the order the killed run would have seen them.

    Args:
        pipeline: The pass's pipeline (``with_epoch(per_worker)``), built on ``worker``'s seeds.
        per_worker: Questions per pass per worker (a whole number of batches).
        batch_size: Questions per batch.
        workers: DataLoader workers (1 for none).
        worker: The map the pipeline's seeds read their worker index from.
        start_pass, skip_batches: Where the first pass starts.
    """

    def __init__(
        self,
        pipeline: wds.DataPipeline,
        per_worker: int,
        batch_size: int,
        workers: int,
        worker: WorkerMap,
        start_pass: int = 0,
        skip_batches: int = 0,
    ) -> None:
        self.pipeline, self.per_worker, self.batch_size = pipeline, per_worker, batch_size
        self.workers, self.worker = workers, worker
        self.start_pass, self.skip_batches = start_pass, skip_batches
        self._resuming = skip_batches > 0  # per process: each worker holds its own copy

    def __len__(self) -> int:
        return self.per_worker * self.workers

    def __iter__(self) -> Iterator[VideoQA]:
        skip = 0
        self.worker.offset = 0
        if self._resuming:
            self._resuming = False
            self.worker.offset = self.skip_batches % self.workers
            served = len(range(self.worker(), self.skip_batches, self.workers))  # batches of its stream
            skip = served * self.batch_size
        return itertools.islice(iter(self.pipeline), skip, None)


class VideoQADataModule(L.LightningDataModule):
    """Streams train / val / test shards as lists of VideoQA.

    Args:
        train_shards, val_shards, test_shards: Anything `expand_shards` accepts, or None.
        batch_size: Questions per batch.
        num_workers: DataLoader worker processes (decoding happens there).
        frames_per_clip: Frames sampled uniformly from every clip.
        frame_size: [H, W] resize at decode time (multiples of the model's patch * merge), None = stored
            (the configured size lives in the data config, ``configs/data/*.yaml``).
        backend: "decord" or "pyav".
        shuffle_buffer: Videos in the training shuffle buffer (still encoded, so cheap).
        seed: Seed of shard resampling and shuffling.
        val_limit: Keep only the first N validation questions (shard order); None = all.
        epoch_length: Training questions per epoch over all ranks; None = questions in the train shards.
        category_keep: Training mixture, ``{category: probability}`` of keeping a question (unnamed
            categories: 1); None keeps every question. One that drops every category of the shards
            raises ValueError instead of spinning on the endless training stream.
    """

    def __init__(
        self,
        train_shards: str | list[str] | None = None,
        val_shards: str | list[str] | None = None,
        test_shards: str | list[str] | None = None,
        batch_size: int = 8,
        num_workers: int = 0,
        frames_per_clip: int = 8,
        frame_size: tuple[int, int] | list[int] | None = None,
        backend: str = "decord",
        shuffle_buffer: int = 256,
        seed: int = 0,
        val_limit: int | None = None,
        epoch_length: int | None = None,
        category_keep: dict[str, float] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.frame_size = tuple(frame_size) if frame_size is not None else None
        self.decoders: dict[str, VideoQADecoder] = {}
        self._resume: dict[str, int] | None = None  # training stream position from a checkpoint
        self._stream_shape: dict[str, int] | None = None  # of the training stream, once built

    @property
    def skipped(self) -> int:
        """Skipped videos, questions and shards of every split so far, DataLoader workers included.

        One event per skip: the resampled training stream counts a bad video each time it meets it.
        """
        return sum(d.skipped for d in self.decoders.values())

    @property
    def skipped_samples(self) -> list[dict]:
        """Each distinct skip once, ``{"split", "key", "url", "reason"}``: those met in THIS process
        (with num_workers > 0 the workers' own are in the log as warnings; the count above has them all).
        """
        return [{"split": split, **r} for split, d in self.decoders.items() for r in d.skipped_samples]

    def _decoder(self, split: str) -> VideoQADecoder:
        hp = self.hparams
        skips = SkipLog(shared=hp.num_workers > 0)  # workers add to the count the trainer reads
        self.decoders[split] = VideoQADecoder(hp.frames_per_clip, self.frame_size, hp.backend, skips=skips)
        return self.decoders[split]

    def _loader(self, dataset: IterableDataset) -> DataLoader:
        hp = self.hparams
        return DataLoader(
            dataset,
            batch_size=hp.batch_size,
            num_workers=hp.num_workers,
            collate_fn=collate_videoqa,
            persistent_workers=hp.num_workers > 0,  # keeps the resampling epoch counter moving
        )

    def train_dataset(self) -> TrainStream:
        """The training stream (also usable without a Trainer); after ``load_state_dict`` it starts where
        the checkpoint's stream stopped."""
        hp = self.hparams
        if hp.train_shards is None:
            raise ValueError("train_shards is not set")
        urls = expand_shards(hp.train_shards)
        rank, world = rank_and_world(self.trainer)
        total = hp.epoch_length if hp.epoch_length is not None else count_questions(urls)
        workers = max(1, hp.num_workers)
        # per worker: a whole number of batches, identical on every rank
        per_worker = max(1, math.ceil(total / (world * workers * hp.batch_size))) * hp.batch_size
        decoder = self._decoder("train")
        # the stream is endless: stop with one message when thousands of reads in a row give no question
        guard = StreamGuard(
            max(1000, 20 * (len(urls) + hp.shuffle_buffer)),
            f"train shards {urls[:3]}{' ...' if len(urls) > 3 else ''}",
            decoder.skips,
        )
        self._stream_shape = {"batches_per_pass": per_worker * workers // hp.batch_size, "workers": workers}
        start_pass, skip = self._start()
        worker = WorkerMap()
        shards = wds.ResampledShards(
            urls, seed=hp.seed, worker_seed=WorkerSeed(rank, worker), deterministic=True
        )
        shards.epoch = start_pass - 1  # every iter advances it first
        pipeline = wds.DataPipeline(
            shards,
            guard.tick,
            decoder.skips.watch_shards,
            wds.tarfile_to_samples(handler=decoder.skips.tar_error),
            decoder.skips.watch_samples,
            wds.detshuffle(
                hp.shuffle_buffer, initial=min(hp.shuffle_buffer, 16), seed=hp.seed, epoch=start_pass - 1
            ),
            guard.tick,
            decoder,
            guard.reset,
        )
        if hp.category_keep:
            pipeline.append(CategoryKeep(dict(hp.category_keep), hp.seed, rank, worker, passes=start_pass))
        return TrainStream(
            pipeline.with_epoch(per_worker), per_worker, hp.batch_size, workers, worker, start_pass, skip
        )

    # ---- exact resume: the training stream's position in Lightning checkpoints --------------------
    def state_dict(self) -> dict[str, int]:
        """Where the training stream stands: pass (= epoch) and batches consumed in it, with the stream's
        shape; saved by Lightning in every checkpoint of a ``fit`` ({} outside one)."""
        trainer = self.trainer
        if trainer is None or self._stream_shape is None or trainer.state.fn != "fit":
            return {}
        return {
            "pass": trainer.current_epoch,
            "batches": trainer.fit_loop.epoch_loop.batch_progress.current.processed,
            **self._stream_shape,
            "batch_size": self.hparams.batch_size,
        }

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        """Make the next ``train_dataset`` continue the checkpoint's stream (``TrainStream``)."""
        if not state_dict:
            return
        self._resume = dict(state_dict)
        # the stream resumes exactly, which Lightning cannot see for an IterableDataset
        warnings.filterwarnings(
            "ignore", message="You're resuming from a checkpoint that ended before the epoch"
        )

    def _start(self) -> tuple[int, int]:
        """(first pass, batches of it to skip) of the training stream being built; (0, 0) unless resuming.

        Used once: a stream rebuilt later starts from pass 0, as it would without a resume.
        """
        state, self._resume = self._resume, None
        if state is None:
            return 0, 0
        now = {**self._stream_shape, "batch_size": self.hparams.batch_size}
        changed = ", ".join(f"{k} {state[k]} -> {v}" for k, v in now.items() if state[k] != v)
        if changed:
            log.warning(
                "training stream settings changed since the checkpoint (%s): the resumed run does not see "
                "the questions the interrupted one would have",
                changed,
            )
        per_pass = now["batches_per_pass"]
        start_pass, skip = state["pass"] + state["batches"] // per_pass, state["batches"] % per_pass
        log.info(
            "training stream resumes at pass %d after %d batches (skipped by decoding)", start_pass, skip
        )
        return start_pass, skip

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset())

    def _eval(self, split: str, shards, limit: int | None = None, pad: bool = False) -> DataLoader | list:
        if shards is None:
            return []
        return self._loader(self.eval_stream(split, shards, limit, pad=pad))

    def eval_stream(
        self, split: str, shards, limit: int | None = None, chunk: int | None = None, pad: bool = False
    ) -> EvalStream:
        """This rank's share of ``shards`` (``EvalStream``; ``make eval`` iterates it in-process, by chunks)."""
        rank, world = rank_and_world(self.trainer)
        return EvalStream(expand_shards(shards), self._decoder(split), limit, rank, world, chunk, pad=pad)

    def val_dataloader(self) -> DataLoader | list:
        """Validation questions, padded with ``None`` so every rank runs the same number of steps."""
        return self._eval("val", self.hparams.val_shards, self.hparams.val_limit, pad=True)

    def test_dataloader(self) -> DataLoader | list:
        return self._eval("test", self.hparams.test_shards)
