"""The one on-disk schema for long-video QA (synthetic AND real benchmark videos): WebDataset tar shards.

One sample = one video, already segmented into T clips. Members of a sample are adjacent in the tar:

    {key}.json      meta (below)
    {key}.000.mp4   clip 0: H.264 mp4 starting on a keyframe (data/video.py: encode_mp4 / segment_video)
    {key}.001.mp4   clip 1
    ...             one mp4 per clip, in order

key = video_id with every "." replaced by "_" (WebDataset ends the key at the first dot); keys are
unique within a shard. meta:

    {"schema": 1,
     "video_id": str,
     "source": "synthetic" | "videomme" | "lvbench" | ...,
     "duration": float,                         # seconds, of the source video
     "clips": [[start_s, end_s], ...],          # T spans, in the source video's time
     "questions": [{"qid": str, "question": str, "options": [str, ...],   # texts, no "A." prefixes
                    "answer": "B" | null, "category": str, "categories": [str, ...],
                    "memories": [str] * T | null,                        # oracle / teacher M_1..M_T
                    ...extra per-benchmark keys}],
     ...extra per-video keys}

Several questions may share a video: its clips are decoded once and the frame tensors shared.
Extra keys travel to `VideoQA.meta` (video-level extras first, question-level extras override).

Deliberately not here: streaming, shuffling, worker splitting (datamodule.py), how clips are made
(video.py), what questions mean (synthetic.py, eval importers).
"""

from __future__ import annotations

import glob
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import webdataset as wds

from videomem.data.types import LETTERS, VideoQA
from videomem.data.video import VideoDecodeError, decode_frames

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
_CLIP_FIELD = re.compile(r"^(\d+)\.mp4$")
_QUESTION_KEYS = ("qid", "question", "options", "answer", "category", "categories", "memories")
_VIDEO_KEYS = ("schema", "video_id", "clips", "questions")


class ShardFormatError(ValueError):
    """A sample or meta that does not follow the schema above."""


@dataclass
class VideoSample:
    """One video ready to be written: its clip mp4s (in order) and its meta (schema above)."""

    video_id: str
    clips: list[bytes]
    meta: dict


def sample_key(video_id: str) -> str:
    """WebDataset key of a video: the id with every '.' replaced by '_'."""
    return video_id.replace(".", "_")


def validate_meta(meta: dict, num_clips: int) -> None:
    """Raise ShardFormatError unless `meta` follows the schema for a video of `num_clips` clips."""
    for k in ("video_id", "duration", "clips", "questions"):
        if k not in meta:
            raise ShardFormatError(f"meta lacks {k!r}")
    if meta.get("schema", SCHEMA_VERSION) != SCHEMA_VERSION:
        raise ShardFormatError(f"unsupported schema {meta.get('schema')!r}")
    if len(meta["clips"]) != num_clips or num_clips < 1:
        raise ShardFormatError(f"{meta['video_id']}: {len(meta['clips'])} spans for {num_clips} clips")
    for q in meta["questions"]:
        missing = [k for k in ("qid", "question", "options", "category") if k not in q]
        if missing:
            raise ShardFormatError(f"{meta['video_id']}: question lacks {missing}")
        if not 2 <= len(q["options"]) <= len(LETTERS):
            raise ShardFormatError(f"{q['qid']}: {len(q['options'])} options, expected 2..{len(LETTERS)}")
        answer = q.get("answer")
        if answer is not None and answer not in LETTERS[: len(q["options"])]:
            raise ShardFormatError(f"{q['qid']}: answer {answer!r} is not a letter of its options")
        memories = q.get("memories")
        if memories is not None and len(memories) != num_clips:
            raise ShardFormatError(f"{q['qid']}: {len(memories)} memories for {num_clips} clips")


def write_shards(
    samples: Iterable[VideoSample], out_dir: str | Path, *, prefix: str = "shard", max_per_shard: int = 64
) -> list[Path]:
    """Write videos to out_dir/{prefix}-000000.tar, ... (at most `max_per_shard` videos each).

    Tar members get mtime 0, so the same samples give byte-identical shards.

    Returns:
        Paths of the shards written, in order.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    writer: wds.TarWriter | None = None
    count, seen = 0, set()
    try:
        for sample in samples:
            meta = {"schema": SCHEMA_VERSION, **sample.meta, "video_id": sample.video_id}
            validate_meta(meta, len(sample.clips))
            key = sample_key(sample.video_id)
            if key in seen:
                raise ShardFormatError(f"duplicate key {key!r} (video ids must stay unique after '.' -> '_')")
            seen.add(key)
            if writer is None or count == max_per_shard:
                if writer is not None:
                    writer.close()
                paths.append(out_dir / f"{prefix}-{len(paths):06d}.tar")
                writer, count = wds.TarWriter(str(paths[-1]), encoder=False, mtime=0), 0
            record = {"__key__": key, "json": json.dumps(meta).encode("utf-8")}
            record.update({f"{t:03d}.mp4": clip for t, clip in enumerate(sample.clips)})
            writer.write(record)
            count += 1
    finally:
        if writer is not None:
            writer.close()
    return paths


def expand_shards(spec: str | Path | Sequence[str | Path]) -> list[str]:
    """Shard paths from a directory (its *.tar, sorted), a glob, a brace pattern or a list of those.

    Brace patterns are expanded as WebDataset does ("shard-{000000..000003}.tar") and may name
    remote URLs; directories and globs must match local files.

    Raises:
        ValueError: Nothing matched.
    """
    if not isinstance(spec, (str, os.PathLike)):  # list, tuple, Hydra ListConfig
        return [p for s in spec for p in expand_shards(s)]
    spec = str(spec)
    if os.path.isdir(spec):
        paths = sorted(glob.glob(os.path.join(spec, "*.tar")))
    elif "{" in spec:
        paths = list(wds.shardlists.expand_urls(spec))
    elif any(c in spec for c in "*?["):
        paths = sorted(glob.glob(spec))
    else:
        paths = [spec]
    if not paths:
        raise ValueError(f"no shards match {spec!r}")
    return paths


def log_and_continue(exn: Exception) -> bool:
    """WebDataset error handler: log the error and go on."""
    log.warning("skipping unreadable shard data: %r", exn)
    return True


def iter_samples(paths: str | Sequence[str], *, skip_bad_tar: bool = False) -> Iterator[dict]:
    """Raw WebDataset samples ({"__key__", "json", "000.mp4", ...}) of the shards, in order.

    Args:
        paths: Anything `expand_shards` accepts.
        skip_bad_tar: Log and skip the rest of a truncated / unreadable tar instead of raising.
    """
    handler = log_and_continue if skip_bad_tar else wds.reraise_exception
    yield from wds.DataPipeline(
        wds.SimpleShardList(expand_shards(paths)), wds.tarfile_to_samples(handler=handler)
    )


def read_meta(sample: dict) -> dict:
    """The meta dict of a raw sample (the json member as bytes, str or already decoded)."""
    raw = sample.get("json")
    if raw is None:
        raise ShardFormatError(f"sample {sample.get('__key__')!r} has no json member")
    if isinstance(raw, dict):
        return raw
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ShardFormatError(f"sample {sample.get('__key__')!r}: bad json: {err}") from err


def clip_fields(sample: dict) -> list[str]:
    """Names of a raw sample's clip members, in clip order ("000.mp4", "001.mp4", ...)."""
    found = sorted((int(m.group(1)), k) for k in sample if (m := _CLIP_FIELD.match(k)))
    return [k for _, k in found]


def sample_to_videoqa(
    sample: dict, *, frames_per_clip: int, frame_size: tuple[int, int] | None, backend: str = "decord"
) -> list[VideoQA]:
    """Decode a raw sample's clips once and return one VideoQA per question (frames shared).

    Args:
        sample: Raw WebDataset sample.
        frames_per_clip: Frames sampled uniformly from each clip.
        frame_size: (H, W) resize at decode time, or None for the stored size.
        backend: "decord" or "pyav".

    Raises:
        ShardFormatError: Sample does not follow the schema.
        VideoDecodeError: A clip cannot be decoded.
    """
    meta = read_meta(sample)
    fields = clip_fields(sample)
    validate_meta(meta, len(fields))
    size = tuple(frame_size) if frame_size is not None else None
    clips = [decode_frames(sample[k], num_frames=frames_per_clip, size=size, backend=backend) for k in fields]
    spans = [(float(a), float(b)) for a, b in meta["clips"]]
    video_extra = {k: v for k, v in meta.items() if k not in _VIDEO_KEYS}
    out = []
    for q in meta["questions"]:
        extra = {k: v for k, v in q.items() if k not in _QUESTION_KEYS}
        out.append(
            VideoQA(
                video_id=meta["video_id"],
                qid=str(q["qid"]),
                question=q["question"],
                options=list(q["options"]),
                answer=q.get("answer"),
                category=q["category"],
                clips=list(clips),  # [F, H, W, 3] each, the same tensors for every question
                spans=list(spans),
                memories=list(q["memories"]) if q.get("memories") is not None else None,
                categories=list(q.get("categories") or [q["category"]]),
                meta={**video_extra, **extra},
            )
        )
    return out


class VideoQADecoder:
    """Raw samples -> VideoQA per question, skipping (with a warning) and counting videos that fail.

    A pipeline stage: `decoder(samples)` is an iterator; `decoder.skipped` counts skips in this process.
    """

    def __init__(
        self, frames_per_clip: int, frame_size: tuple[int, int] | None, backend: str = "decord"
    ) -> None:
        self.kw = {"frames_per_clip": frames_per_clip, "frame_size": frame_size, "backend": backend}
        self.skipped = 0

    def decode(self, sample: dict) -> list[VideoQA]:
        """The sample's questions, or [] (after a warning) if it cannot be parsed or decoded."""
        try:
            return sample_to_videoqa(sample, **self.kw)
        except (VideoDecodeError, ShardFormatError) as err:
            self.skipped += 1
            log.warning("skipping video %s (%d skipped so far): %s", sample.get("__key__"), self.skipped, err)
            return []

    def __call__(self, samples: Iterable[dict]) -> Iterator[VideoQA]:
        for sample in samples:
            yield from self.decode(sample)


def iter_shard_videoqa(
    paths: str | Sequence[str],
    *,
    frames_per_clip: int,
    frame_size: tuple[int, int] | None,
    backend: str = "decord",
    skip_corrupt: bool = True,
) -> Iterator[VideoQA]:
    """Simple sequential reader (evaluation, tests): every question of every video, in shard order.

    Args:
        paths: Anything `expand_shards` accepts.
        frames_per_clip, frame_size, backend: As in `sample_to_videoqa`.
        skip_corrupt: Log and skip a video (or the rest of a tar) that fails instead of raising.
    """
    samples = iter_samples(paths, skip_bad_tar=skip_corrupt)
    if skip_corrupt:
        yield from VideoQADecoder(frames_per_clip, frame_size, backend)(samples)
        return
    for sample in samples:
        yield from sample_to_videoqa(
            sample, frames_per_clip=frames_per_clip, frame_size=frame_size, backend=backend
        )
