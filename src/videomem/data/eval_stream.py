"""The evaluation stream: a shard list's questions split over ranks and DataLoader workers, each once.

Deterministic and unshuffled (validation and ``make eval``). When there are at least as many shards as
consumers (ranks x workers) and no limit, the shards are split (as wds.split_by_node then
wds.split_by_worker would, with the rank fixed in the main process); otherwise every consumer reads
every shard and keeps its videos (v % consumers), or, with ``chunk``, its chunks of questions: the
split's questions in shard order cut into a single process's batches, dealt to the consumers in turn,
each question tagged with its index so that the shares merge back into one order (``positioned``).
``limit`` keeps the first N questions in shard order, the same N for any number of consumers.

Bad data is skipped and counted as the decoder does (``data/skips.py``), once whatever the split.

Deliberately not here: the training stream (``data/datamodule.py``), gathering the shares (the
evaluation's ``eval/distributed.py``).
"""

from __future__ import annotations

from collections.abc import Iterator

from torch.utils.data import IterableDataset, get_worker_info

from videomem.data.shards import (
    ShardFormatError,
    VideoQADecoder,
    iter_samples,
    question_count,
    read_meta,
)
from videomem.data.skips import SkipLog
from videomem.data.types import VideoQA


def _worker() -> tuple[int, int]:
    """(this DataLoader worker, workers); (0, 1) in the main process."""
    info = get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


class EvalStream(IterableDataset):
    """Deterministic, unshuffled questions of a shard list, split over ranks and workers without overlap.

    Args:
        urls: Shard paths.
        decoder: Turns raw samples into VideoQA, skipping corrupt ones.
        limit: Keep only the first N questions (global shard order; a skipped question counts).
        rank, world: This process's rank and the world size (fixed in the main process: a DataLoader
            worker has no process group).
        chunk: None: whole videos (or whole shards) per consumer, as validation reads them. N: the
            questions in shard order cut into chunks of N, chunk c to consumer c % consumers, so that
            the chunks are a single process's batches of N whatever the world size (``make eval`` under
            torchrun: the same batches give the same outputs). Every consumer then reads every shard
            (the bytes, cheap) and decodes only the videos it has a question of.
        pad: Every (rank, worker) yields the same number of items: its questions, then ``None`` up to
            the largest share (a question that fails to decode leaves a ``None`` too). Validation under
            DDP needs it: each validation step passes DDP's forward, which broadcasts buffers, so every
            rank must run the same number of steps whatever the split (a rank without a question would
            otherwise wait in the epoch-end metric sync while the others wait in that broadcast). Every
            consumer then reads every shard, which counts every share.
    """

    def __init__(
        self,
        urls: list[str],
        decoder: VideoQADecoder,
        limit: int | None = None,
        rank: int = 0,
        world: int = 1,
        chunk: int | None = None,
        pad: bool = False,
    ) -> None:
        if chunk is not None and chunk < 1:
            raise ValueError(f"chunk must be >= 1 questions, got {chunk}")
        self.urls, self.decoder, self.limit, self.rank, self.world = urls, decoder, limit, rank, world
        self.chunk, self.pad = chunk, pad

    def __iter__(self) -> Iterator[VideoQA | None]:
        worker, workers = _worker()
        consumers, me = self.world * workers, self.rank * workers + worker
        if not self.pad and self.chunk is None and self.limit is None and len(self.urls) >= consumers:
            # = wds.split_by_node + wds.split_by_worker
            mine = self.urls[self.rank :: self.world][worker::workers]
            yield from self.decoder(iter_samples(mine, skips=self.decoder.skips))
            return
        shares = [0] * consumers if self.pad else None  # questions each consumer is given
        served = 0
        for _, qa in self._read_all(consumers, me, shares):
            served += 1
            yield qa
        if shares is not None:
            yield from [None] * (max(shares) - served)

    def positioned(self) -> Iterator[tuple[int, VideoQA]]:
        """``(index, question)`` of this consumer's share: ``index`` counts the questions of all shards in
        order (skipped ones too), so the shares of all ranks merge back into one order by it."""
        worker, workers = _worker()
        return self._read_all(self.world * workers, self.rank * workers + worker)

    def _owner(self, video: int, question: int, consumers: int) -> int:
        """The consumer of question ``question`` (global index) of video ``video``."""
        return (question // self.chunk if self.chunk else video) % consumers

    def _read_all(
        self, consumers: int, me: int, shares: list[int] | None = None
    ) -> Iterator[tuple[int, VideoQA]]:
        """This consumer's questions with their indices; ``shares[c]`` counts consumer c's as they go."""
        skips = self.decoder.skips
        seen = 0  # questions before this video, in global shard order
        # every consumer reads every shard here: only consumer 0 records the shard-level skips, and a
        # video's skips are recorded by the consumer of its first question (another may decode it too)
        quiet = VideoQADecoder(**self.decoder.kw)
        for v, sample in enumerate(iter_samples(self.urls, skips=skips if me == 0 else SkipLog())):
            if self.limit is not None and seen >= self.limit:
                return
            try:
                meta = read_meta(sample)
                n = question_count(meta)
            except ShardFormatError as err:
                if self._owner(v, seen, consumers) == me:
                    skips.add(sample.get("__key__"), sample.get("__url__"), f"ShardFormatError: {err}")
                continue
            keep = n if self.limit is None else min(n, self.limit - seen)
            if shares is not None:
                for j in range(keep):
                    shares[self._owner(v, seen + j, consumers)] += 1
            mine = {j for j in range(keep) if self._owner(v, seen + j, consumers) == me}
            if mine:
                decoder = self.decoder if self._owner(v, seen, consumers) == me else quiet
                for j, qa in _question_indices(meta["questions"], decoder.decode(sample)):
                    if j in mine:
                        yield seen + j, qa
            seen += n


def _question_indices(declared: list, decoded: list[VideoQA]) -> list[tuple[int, VideoQA]]:
    """Each decoded question with its index among the video's declared questions (the decoder keeps
    the valid ones, in order, so ``decoded`` is a subsequence of ``declared``, matched by qid)."""
    out, k = [], 0
    for j, q in enumerate(declared):
        if k < len(decoded) and isinstance(q, dict) and str(q.get("qid")) == decoded[k].qid:
            out.append((j, decoded[k]))
            k += 1
    return out
