"""LightningDataModule that streams WebDataset video shards (shards.py schema) as lists of VideoQA.

Training (``train_stream.py``): passes over the training videos, each question once per pass over all
ranks and DataLoader workers (a seeded shuffle per pass, dealt round-robin), decoded in the workers;
every rank and worker yields the same number of questions per epoch (``epoch_length`` questions over
all of them: one validation interval), so DDP ranks never wait on each other at epoch end. The stream
of every (rank, worker) is fixed by the seed and the index of the shards, so the datamodule's
``state_dict`` (epoch, batches consumed) is all a Lightning checkpoint needs to resume it exactly: the
resumed run starts at the next question, found from the index without reading any video.

Validation / test: deterministic and unshuffled, every question exactly once over all ranks and
workers. When there are at least as many shards as consumers (ranks x workers) the shards are split
(as wds.split_by_node then wds.split_by_worker would, with the rank fixed in the main process: a
DataLoader worker has no process group); otherwise (a 64-video val set is one shard) every consumer
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
The endless training stream stops with one `NoUsableDataError` when no training video gives a question
(skips.py: StreamGuard), e.g. when every training shard is empty or every clip undecodable.

Batches are plain lists of VideoQA (the model layer tokenizes and patches); a batch may hold several
questions of one video, sharing its frames. With a ``transform`` (the model's frames -> patches, built
by Hydra from the model config) every split's clips are prepared in the workers by a stage of their
own (prepare.py), after the streams above.

Deliberately not here: tokenisation, model-specific resizing rules (pass `frame_size`), writing shards.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable

import lightning as L
from torch.utils.data import DataLoader, IterableDataset

from videomem.data.distributed import rank_and_world
from videomem.data.eval_stream import EvalStream
from videomem.data.prepare import PreparedStream
from videomem.data.shards import VideoQADecoder, expand_shards
from videomem.data.skips import NoUsableDataError, SkipLog, StreamGuard
from videomem.data.train_stream import TrainStream, index_videos, per_worker_questions
from videomem.data.types import VideoQA

log = logging.getLogger(__name__)


def collate_videoqa(batch: list[VideoQA]) -> list[VideoQA]:
    """Identity collate: a batch is a plain list of VideoQA (no tensor stacking)."""
    return list(batch)


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
        seed: Seed of the training passes' order and of ``category_keep``.
        val_limit: Keep only the first N validation questions (shard order); None = all.
        epoch_length: Training questions per epoch (one validation interval) over all ranks; None = the
            questions of one pass over the train shards.
        category_keep: Training mixture, ``{category: probability}`` of training a question in a pass
            (unnamed categories: 1); None keeps every question. One that keeps nothing of the shards
            raises ValueError instead of spinning on the endless training stream.
        transform: Applied to every clip's frames in the loader workers (e.g. the model's vision
            patches, ``videomem.model.vision.FramePatcher``); None hands the frames on.
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
        seed: int = 0,
        val_limit: int | None = None,
        epoch_length: int | None = None,
        category_keep: dict[str, float] | None = None,
        transform: Callable | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["transform"])
        self.transform = transform
        self.frame_size = tuple(frame_size) if frame_size is not None else None
        self.decoders: dict[str, VideoQADecoder] = {}
        self._resume: dict[str, int] | None = None  # training stream position from a checkpoint
        self._stream_shape: dict[str, int] | None = None  # of the training stream, once built

    @property
    def skipped(self) -> int:
        """Skipped videos, questions and shards of every split so far, DataLoader workers included.

        One event per skip: the training stream counts an undecodable video each pass it meets it.
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
        if self.transform is not None:  # clips prepared in the workers, a stage after the stream
            dataset = PreparedStream(dataset, self.transform)
        return DataLoader(
            dataset,
            batch_size=hp.batch_size,
            num_workers=hp.num_workers,
            collate_fn=collate_videoqa,
            persistent_workers=hp.num_workers > 0,  # keeps each worker's epoch counter moving
        )

    def train_dataset(self) -> TrainStream:
        """The training stream (also usable without a Trainer); after ``load_state_dict`` it starts where
        the checkpoint's stream stopped."""
        hp = self.hparams
        if hp.train_shards is None:
            raise ValueError("train_shards is not set")
        urls = expand_shards(hp.train_shards)
        rank, world = rank_and_world(self.trainer)
        decoder = self._decoder("train")
        videos = index_videos(urls, decoder.skips)
        if not videos:  # every shard read gave nothing
            what = f"train shards {urls[:3]}{' ...' if len(urls) > 3 else ''}"
            raise NoUsableDataError(StreamGuard(len(urls), what, decoder.skips).message())
        workers = max(1, hp.num_workers)
        total = hp.epoch_length if hp.epoch_length is not None else sum(len(v.categories) for v in videos)
        per_worker = per_worker_questions(total, world, workers, hp.batch_size)  # identical on every rank
        self._stream_shape = {
            "batches_per_epoch": per_worker * workers // hp.batch_size,
            "workers": workers,
            "world": world,
            "videos": len(videos),
        }
        start_epoch, skip = self._start()
        keep = dict(hp.category_keep) if hp.category_keep else None
        return TrainStream(
            videos, decoder, rank, world, per_worker, hp.batch_size, workers, hp.seed, keep, start_epoch, skip
        )

    # ---- exact resume: the training stream's position in Lightning checkpoints --------------------
    def state_dict(self) -> dict[str, int]:
        """Where the training stream stands: epoch and batches consumed in it, with the stream's shape;
        saved by Lightning in every checkpoint of a ``fit`` ({} outside one)."""
        trainer = self.trainer
        if trainer is None or self._stream_shape is None or trainer.state.fn != "fit":
            return {}
        return {
            "epoch": trainer.current_epoch,
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
        """(first epoch, batches of it to skip) of the training stream being built; (0, 0) unless resuming.

        Used once: a stream rebuilt later starts from epoch 0, as it would without a resume.
        """
        state, self._resume = self._resume, None
        if state is None:
            return 0, 0
        now = {**self._stream_shape, "batch_size": self.hparams.batch_size}
        changed = ", ".join(f"{k} {state.get(k)} -> {v}" for k, v in now.items() if state.get(k) != v)
        if changed:
            log.warning(
                "training stream settings changed since the checkpoint (%s): the resumed run does not see "
                "the questions the interrupted one would have",
                changed,
            )
        per_epoch = now["batches_per_epoch"]
        start, skip = state["epoch"] + state["batches"] // per_epoch, state["batches"] % per_epoch
        log.info("training stream resumes at epoch %d after %d batches (found from the index)", start, skip)
        return start, skip

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
