"""The one on-disk schema for long-video QA (synthetic AND real benchmark videos): WebDataset tar shards.

One sample = one video, already segmented into T clips. Members of a sample are adjacent in the tar:

    {key}.json      meta (below)
    {key}.000.mp4   clip 0: H.264 mp4 starting on a keyframe (data/video.py: encode_mp4 / segment_video)
    {key}.001.mp4   clip 1
    ...             one mp4 per clip, in order

key = video_id with every "." replaced by "_" (WebDataset ends the key at the first dot); keys are
unique within a shard. meta:

    {"schema": 2,
     "video_id": str,
     "source": "synthetic" | "videomme" | "lvbench" | ...,
     "duration": float,                         # seconds, of the source video
     "clips": [[start_s, end_s], ...],          # T spans, in the source video's time
     "questions": [{"qid": str, "question": str,
                    "kind": "mc" | "open",                               # multiple-choice / open-ended
                    "options": [str, ...],   # mc: 2..5 texts, no "A." prefixes; open: [] (or absent)
                    "answer": str | null,    # mc: the gold letter "B"; open: the reference answer text
                    "category": str, "categories": [str, ...],
                    "memories": [str] * T | null,                        # oracle / teacher M_1..M_T
                    "answerable": bool,  # optional: a reader answered from M_T (make memories)
                    ...extra per-benchmark keys}],
     ...extra per-video keys}

Versions: schema 1 (before open-ended questions) had no ``kind``; its questions are all multiple-choice
and still read. A question without ``kind`` is multiple-choice in either version, so an open-ended
question always says so: a question that merely lacks options is an error, never silently open-ended.
The writer stamps ``kind`` on every question and writes schema 2, which a reader that predates open-ended
questions refuses whole ("unsupported schema 2") instead of skipping their questions one by one.

Several questions may share a video: its clips are decoded once and the frame tensors shared.
Extra keys travel to `VideoQA.meta` (video-level extras first, question-level extras override).

Reading never trusts a shard: `validate_video` / `validate_question` check every json type, and the
readers (`VideoQADecoder`, `iter_shard_videoqa`) skip a bad video, a bad question or the rest of a
truncated tar, recording each in a `SkipLog` (skips.py: count and list, for `make eval` and the trainer).

Deliberately not here: streaming, shuffling, worker splitting (datamodule.py), how clips are made
(video.py), what questions mean (synthetic.py, eval importers).
"""

from __future__ import annotations

import glob
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import webdataset as wds

from videomem.data.schema import (  # the checks live in schema.py; readers import them from here too
    MULTIPLE_CHOICE,
    QUESTION_KEYS,
    SCHEMA_VERSION,
    VIDEO_KEYS,
    ShardFormatError,
    question_count,  # noqa: F401
    validate_meta,
    validate_question,
    validate_video,
)
from videomem.data.skips import SkipLog
from videomem.data.types import VideoQA
from videomem.data.video import VideoDecodeError, decode_frames

_CLIP_FIELD = re.compile(r"^(\d+)\.mp4$")


@dataclass
class VideoSample:
    """One video ready to be written: its clip mp4s (in order) and its meta (schema above)."""

    video_id: str
    clips: list[bytes]
    meta: dict


def sample_key(video_id: str) -> str:
    """WebDataset key of a video: the id with every '.' replaced by '_'."""
    return video_id.replace(".", "_")


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
            meta = {**sample.meta, "schema": SCHEMA_VERSION, "video_id": sample.video_id}
            if isinstance(meta.get("questions"), (list, tuple)):  # every stored question names its kind
                meta["questions"] = [
                    {"kind": MULTIPLE_CHOICE, **q} if isinstance(q, dict) else q for q in meta["questions"]
                ]
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


def iter_samples(paths: str | Sequence[str], *, skips: SkipLog | None = None) -> Iterator[dict]:
    """Raw WebDataset samples ({"__key__", "json", "000.mp4", ...}) of the shards, in order.

    Args:
        paths: Anything `expand_shards` accepts.
        skips: Record an unreadable or truncated tar (the rest of it is skipped) and a shard without
            samples here, and go on; None: raise on the first unreadable tar.
    """
    urls = expand_shards(paths)
    if skips is None:
        yield from wds.DataPipeline(wds.SimpleShardList(urls), wds.tarfile_to_samples())
        return
    yield from wds.DataPipeline(
        wds.SimpleShardList(urls),
        skips.watch_shards,
        wds.tarfile_to_samples(handler=skips.tar_error),
        skips.watch_samples,
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
    sample: dict,
    *,
    frames_per_clip: int,
    frame_size: tuple[int, int] | None,
    backend: str = "decord",
    on_bad_question: Callable[[dict, ShardFormatError], None] | None = None,
) -> list[VideoQA]:
    """Decode a raw sample's clips once and return one VideoQA per question (frames shared).

    Args:
        sample: Raw WebDataset sample.
        frames_per_clip: Frames sampled uniformly from each clip.
        frame_size: (H, W) resize at decode time, or None for the stored size.
        backend: "decord" or "pyav".
        on_bad_question: Called with a question that breaks the schema (and the error), which is then
            left out; None raises instead. A video whose every question is bad is not decoded.

    Raises:
        ShardFormatError: Sample does not follow the schema.
        VideoDecodeError: A clip cannot be decoded.
    """
    meta = read_meta(sample)
    fields = clip_fields(sample)
    validate_video(meta, len(fields))
    questions = []
    for q in meta["questions"]:
        try:
            validate_question(q, len(fields))
            questions.append(q)
        except ShardFormatError as err:
            if on_bad_question is None:
                raise
            on_bad_question(q, err)
    if not questions:
        return []
    size = tuple(frame_size) if frame_size is not None else None
    clips = [decode_frames(sample[k], num_frames=frames_per_clip, size=size, backend=backend) for k in fields]
    spans = [(float(a), float(b)) for a, b in meta["clips"]]
    video_extra = {k: v for k, v in meta.items() if k not in VIDEO_KEYS}
    out = []
    for q in questions:
        extra = {k: v for k, v in q.items() if k not in QUESTION_KEYS}
        out.append(
            VideoQA(
                video_id=meta["video_id"],
                qid=str(q["qid"]),
                question=q["question"],
                options=list(q.get("options", [])),
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
    """Raw samples -> VideoQA per question, skipping (with a warning), counting and listing what fails.

    A pipeline stage: `decoder(samples)` is an iterator. A video that cannot be parsed or decoded is
    skipped whole; a question that breaks the schema is skipped alone (key ``"{key}/{qid}"``). Both go to
    `skips` (see skips.py): `skipped` is the count, `skipped_samples` the list.
    """

    def __init__(
        self,
        frames_per_clip: int,
        frame_size: tuple[int, int] | None,
        backend: str = "decord",
        skips: SkipLog | None = None,
    ) -> None:
        self.kw = {"frames_per_clip": frames_per_clip, "frame_size": frame_size, "backend": backend}
        self.skips = skips if skips is not None else SkipLog()

    @property
    def skipped(self) -> int:
        """Videos, questions and shards skipped (see SkipLog.count)."""
        return self.skips.count

    @property
    def skipped_samples(self) -> list[dict]:
        """Each distinct skip once: ``{"key", "url", "reason"}``."""
        return self.skips.samples

    def decode(self, sample: dict) -> list[VideoQA]:
        """The sample's valid questions, or [] (after a warning) if it cannot be parsed or decoded."""
        key, url = sample.get("__key__"), sample.get("__url__")

        def bad_question(q: dict, err: ShardFormatError) -> None:
            self.skips.add(f"{key}/{q.get('qid')}", url, f"bad question: {err}")

        try:
            return sample_to_videoqa(sample, **self.kw, on_bad_question=bad_question)
        except (VideoDecodeError, ShardFormatError) as err:
            self.skips.add(key, url, f"{type(err).__name__}: {err}")
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
    skips: SkipLog | None = None,
) -> Iterator[VideoQA]:
    """Simple sequential reader (evaluation, tests): every question of every video, in shard order.

    Args:
        paths: Anything `expand_shards` accepts.
        frames_per_clip, frame_size, backend: As in `sample_to_videoqa`.
        skip_corrupt: Log, count and skip a video, a question or the rest of a tar that fails, instead
            of raising.
        skips: Where skips are recorded (pass one to read the count and list afterwards, as `make eval`
            does: ``skips.count``, ``skips.samples``); None: a private log.
    """
    if skip_corrupt:
        skips = skips if skips is not None else SkipLog()
        decoder = VideoQADecoder(frames_per_clip, frame_size, backend, skips=skips)
        yield from decoder(iter_samples(paths, skips=skips))
        return
    for sample in iter_samples(paths):
        yield from sample_to_videoqa(
            sample, frames_per_clip=frames_per_clip, frame_size=frame_size, backend=backend
        )
