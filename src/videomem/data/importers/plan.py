"""Which videos go into which shard: a plan fixed by the annotation file alone, whoever runs it.

An annotation file is read once, as a stream, into ``B`` buckets on disk (``OUT/.import/bucket-*.jsonl``,
one JSON line per annotation item): a video belongs to bucket ``crc32(video_id) % B``, and ``B`` depends
only on the annotation's size (``bucket_count``: at least 16, one per 4 MiB). A bucket is then loaded
alone (memory bounded by one bucket, not by the file), its items grouped by video in the order they
first appear (a video's questions may be scattered over the file), and its videos cut into chunks of
``max_per_shard``: chunk c of bucket b is shard ``<prefix>-<b:05d>-<c:04d>.tar``.

So the shards are the same whatever splits the work: ``PART=i/n`` takes the buckets with
``b % n == i - 1`` (n machines together write exactly one process's shards), and worker processes take
whole chunks.

Deliberately not here: reading an annotation format (formats.py, the benchmark modules), decoding
videos and writing shards (build.py).
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

MIN_BUCKETS = 16
BUCKET_BYTES = 4 << 20
_FLUSH_BYTES = 8 << 20  # spilled lines buffered in memory before they are appended to their buckets


@dataclass
class ImportItem:
    """Questions about one video file, as an annotation reader yields them.

    Attributes:
        video_id: The sample id in the shards (unique per video file).
        questions: Question dicts in the shard schema's form.
        meta: Video-level extras for the shard meta (from the first item of a video).
        file: The video's path relative to the videos directory (training sets), or None.
        find: (file stem, directory name or None) to search for under the videos directory
            (benchmarks, whose archives unpack differently), or None.
    """

    video_id: str
    questions: list[dict]
    meta: dict = field(default_factory=dict)
    file: str | None = None
    find: tuple[str, str | None] | None = None

    @property
    def name(self) -> str:
        """How the annotation names the video (skipped.json lists it so)."""
        return self.file if self.file is not None else self.find[0]


def bucket_count(ann: str | Path) -> int:
    """B for an annotation file or directory: one bucket per 4 MiB of annotation, at least 16."""
    path = Path(ann)
    size = (
        sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        if path.is_dir()
        else path.stat().st_size
    )
    return max(MIN_BUCKETS, math.ceil(size / BUCKET_BYTES))


def bucket_of(video_id: str, buckets: int) -> int:
    """The bucket of a video (crc32: the same on every machine and Python)."""
    return zlib.crc32(video_id.encode("utf-8")) % buckets


def parse_part(part: str | None) -> tuple[int, int]:
    """``"i/n"`` -> (i, n) with 1 <= i <= n; None -> (1, 1).

    Raises:
        ValueError: Not of the form i/n.
    """
    if part is None:
        return 1, 1
    try:
        i, n = (int(x) for x in str(part).split("/"))
    except ValueError:
        i = n = 0
    if not 1 <= i <= n:
        raise ValueError(f"PART must be i/n with 1 <= i <= n (this machine's share of n), got {part!r}")
    return i, n


def owned(bucket: int, part: tuple[int, int]) -> bool:
    """Whether PART (i, n) makes the shards of ``bucket``."""
    return bucket % part[1] == part[0] - 1


def bucket_file(state: Path, bucket: int) -> Path:
    return state / f"bucket-{bucket:05d}.jsonl"


def spill(items: Iterable[ImportItem], state: Path, buckets: int, part: tuple[int, int]) -> dict[int, int]:
    """Write every item of this part's buckets to its bucket file (replacing what a cut run left).

    Returns:
        Questions per bucket written (buckets of this part only; empty buckets included).
    """
    mine = [b for b in range(buckets) if owned(b, part)]
    for b in mine:
        bucket_file(state, b).unlink(missing_ok=True)
    counts = dict.fromkeys(mine, 0)
    pending: dict[int, list[str]] = {}
    size = 0

    def flush() -> None:
        for b, lines in pending.items():
            with bucket_file(state, b).open("a", encoding="utf-8") as f:
                f.writelines(lines)
        pending.clear()

    for item in items:
        b = bucket_of(item.video_id, buckets)
        if b not in counts:
            continue
        line = json.dumps(asdict(item), ensure_ascii=False) + "\n"
        pending.setdefault(b, []).append(line)
        counts[b] += len(item.questions)
        size += len(line)
        if size > _FLUSH_BYTES:
            flush()
            size = 0
    flush()
    return counts


def load_bucket(state: Path, bucket: int) -> list[ImportItem]:
    """The videos of a bucket, each with all its questions, in the order they first appear.

    A question id repeated within one video gets ``#2``, ``#3``, ... (ids must be unique per video).
    """
    videos: dict[str, ImportItem] = {}
    path = bucket_file(state, bucket)
    if not path.exists():
        return []
    with path.open(encoding="utf-8") as f:
        for line in f:
            item = ImportItem(**json.loads(line))
            if item.find is not None:
                item.find = tuple(item.find)
            if item.video_id not in videos:
                videos[item.video_id] = ImportItem(item.video_id, [], item.meta, item.file, item.find)
            videos[item.video_id].questions.extend(item.questions)
    for video in videos.values():
        seen: dict[str, int] = {}
        for q in video.questions:
            n = seen[str(q["qid"])] = seen.get(str(q["qid"]), 0) + 1
            if n > 1:
                q["qid"] = f"{q['qid']}#{n}"
    return list(videos.values())


def chunk_names(
    prefix: str, bucket: int, videos: list[ImportItem], max_per_shard: int
) -> list[tuple[str, list]]:
    """(shard name, videos) of each chunk of a bucket."""
    return [
        (f"{prefix}-{bucket:05d}-{c:04d}", videos[i : i + max_per_shard])
        for c, i in enumerate(range(0, len(videos), max_per_shard))
    ]
