"""Bad data is skipped, counted and listed, never a crash or a hang: the skip log and the empty-stream guard.

`SkipLog` is what every reader of shards (the datamodule's streams, `iter_shard_videoqa` for `make eval`)
records a skipped item in: a video whose json or clips are bad, a truncated or unreadable tar (the rest of
it is lost), a shard with no sample at all. Each record is ``{"key", "url", "reason"}`` (``key`` is the
sample key, or None for a whole shard); ``count`` counts skip events, ``samples`` lists each distinct
record once (the training stream meets an undecodable video again every pass). A warning is logged
the first time a record is seen in a process.

`count` can live in shared memory (``shared=True``) so that DataLoader workers add to the number the
main process reads (the trainer logs it); the list stays per process: with workers, the main process
lists only what it read itself, and the workers' records are in the log.

`StreamGuard` stops the endless training stream with one clear `NoUsableDataError` when every video it
reads in a row gives no question (every clip undecodable) instead of spinning forever.

Deliberately not here: the schema checks (shards.py), decoding (video.py), stream layout (datamodule.py).
"""

from __future__ import annotations

import logging
import multiprocessing
import re
from collections.abc import Iterable, Iterator

log = logging.getLogger(__name__)


class NoUsableDataError(RuntimeError):
    """A stream read many shards and samples in a row and none gave a usable question."""


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class SkipLog:
    """Skipped videos and shards of one stream: a count (optionally shared by processes) and a list.

    Args:
        shared: Keep `count` in shared memory, so DataLoader workers (forked or spawned with the
            dataset) add to the number this process reads. Such a log pickles only into a new process.
    """

    def __init__(self, shared: bool = False) -> None:
        self._shared = multiprocessing.Value("q", 0) if shared else None
        self._count = 0
        self.samples: list[dict] = []
        self._seen: set[tuple] = set()
        self._last_url: str | None = None
        self._failed_url: str | None = None
        self._samples_of_last = 0

    @property
    def count(self) -> int:
        """Skip events so far (every process of a shared log)."""
        return int(self._shared.value) if self._shared is not None else self._count

    def add(self, key: str | None, url: str | None, reason: str) -> None:
        """Record one skip: the sample `key` (None for a whole shard) of shard `url`, and why."""
        if self._shared is not None:
            with self._shared.get_lock():
                self._shared.value += 1
        self._count += 1  # this process's own: what watch_shards compares (other workers add to the shared)
        record = {"key": key, "url": url, "reason": _one_line(reason)}
        ident = (key, url, record["reason"])
        if ident not in self._seen:
            self._seen.add(ident)
            self.samples.append(record)
            what = f"video {key}" if key is not None else "shard"
            log.warning("skipping %s of %s (%d skipped so far): %s", what, url, self.count, record["reason"])

    def tar_error(self, exn: Exception) -> bool:
        """WebDataset error handler: record an unreadable or truncated tar (its rest is lost) and go on.

        WebDataset reports one truncation up to twice (the member reader, then the tar reader) and
        names the shard either as a trailing argument or inside the message: recorded once per shard.
        """
        message = str(exn.args[0]) if exn.args else str(exn)
        url = next((a for a in reversed(exn.args[1:]) if isinstance(a, str)), None)
        if url is None and (m := re.search(r" @ <.*name='([^']*)'", message)):
            url = m.group(1)
        message = message.split(" @ <")[0]
        if url is not None and url == self._failed_url:
            return True
        self._failed_url = url
        self.add(None, url, f"unreadable tar, rest of shard skipped: {type(exn).__name__}: {message}")
        return True

    def watch_shards(self, shards: Iterable[dict]) -> Iterator[dict]:
        """Pass shard dicts ({"url": ...}) on; record a shard that yielded no sample and raised nothing.

        Pair it with `watch_samples` after the tar reader (the pipeline pulls lazily, so by the time the
        next shard is asked for, the previous one has yielded all its samples).
        """
        self._last_url, self._samples_of_last = None, 0
        events = self._count
        for shard in shards:
            self._check_empty(events)
            self._last_url, self._samples_of_last, events = shard.get("url"), 0, self._count
            self._failed_url = None
            yield shard
        self._check_empty(events)

    def _check_empty(self, events_before: int) -> None:
        # this process's events only: with a shared count, another worker's skip would hide an empty shard
        if self._last_url is not None and self._samples_of_last == 0 and self._count == events_before:
            self.add(None, self._last_url, "shard has no samples (empty tar)")

    def watch_samples(self, samples: Iterable[dict]) -> Iterator[dict]:
        """Pass raw samples on, counting those of the current shard for `watch_shards` (a truncated tar's
        last, partial sample comes out only with the next shard's first member or end marker)."""
        for sample in samples:
            if sample.get("__url__") == self._last_url:
                self._samples_of_last += 1
            yield sample


class StreamGuard:
    """Raises `NoUsableDataError` after `limit` reads in a row (videos read, or shards indexed) gave no question.

    Args:
        limit: Reads in a row without a question before giving up.
        what: Names the stream in the message (e.g. the shard list).
        skips: The stream's skip log, quoted in the message.
    """

    def __init__(self, limit: int, what: str, skips: SkipLog | None = None) -> None:
        self.limit, self.what, self.skips = limit, what, skips
        self.reads = 0

    def read(self, questions: int) -> None:
        """Count one read that gave ``questions`` questions; raise when too many in a row gave none."""
        self.reads = 0 if questions else self.reads + 1
        if self.reads > self.limit:
            raise NoUsableDataError(self.message())

    def message(self) -> str:
        first = ""
        if self.skips is not None and self.skips.samples:
            r = self.skips.samples[0]
            where = f"{r['url']}" + (f" video {r['key']}" if r["key"] else "")
            first = (
                f" ({self.skips.count} skips of {len(self.skips.samples)} distinct items here; "
                f"first: {where}: {r['reason']})"
            )
        return _one_line(
            f"no usable sample: {self.limit} reads in a row gave no question from {self.what}"
            f"{first}. Fix or remove the bad shards, or point the data at good ones",
            600,
        )
