"""The one importer: annotation items + a videos directory -> shards; resumable, parallel, splittable.

``import_videos`` takes the items of any annotation format (a training set's jsonl / LLaVA file, a
benchmark's published files: the caller reads them) and:

1. spills them, read once as a stream, into buckets under ``OUT/.import/`` (plan.py: which video goes
   to which shard is fixed by the annotation file alone);
2. for each chunk of videos of this machine's buckets (``PART=i/n``), unless it is already done,
   locates each video file (locate.py), cuts it into T clips (``segment_video``: seeks, decodes only
   what it keeps), and writes the chunk's shard ``OUT/<prefix>-<bucket>-<chunk>.tar``; ``workers``
   processes (this one and ``workers - 1`` spawned) make chunks side by side.

Resuming: a shard is written under ``OUT/.import/`` and renamed into place, and only then marked done
(``OUT/.import/<shard>.json``, its counts); a rerun skips done shards without decoding a frame. The
spilled buckets are kept, so a rerun does not read the annotation file again. The settings of the
first run are kept in ``OUT/.import/settings.json``; a rerun with other settings is refused. Encoding
is deterministic, so the shards are byte-identical whatever the workers, parts and interruptions.

A missing, ambiguous or undecodable video is skipped, listed and counted (``skipped.json``); a bad
annotation row is skipped, listed and counted (``problems.json``). With ``PART=i/n`` (n > 1) these
files and ``summary.json`` are named ``*.part<i>of<n>.json``, so parts may share one OUT.

Nothing here reads an annotation format, downloads anything or reads the model.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from videomem.data.importers.locate import find_video, index_videos
from videomem.data.importers.plan import (
    ImportItem,
    bucket_count,
    chunk_names,
    load_bucket,
    owned,
    parse_part,
    spill,
)
from videomem.data.shards import VideoSample, validate_meta, write_shards
from videomem.data.video import segment_video

STATE_DIR = ".import"
#: read_items(on_problem) -> the annotation's items; on_problem({"line"/"record", "field", "error"})
ReadItems = Callable[[Callable[[dict], None]], Iterable[ImportItem]]


def write_json(path: Path, obj: object) -> None:
    """Write JSON atomically (temp file + rename)."""
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(obj, indent=2), encoding="utf-8")
    os.replace(tmp, path)


class ProblemLog:
    """Bad annotation rows streamed to a JSON list on disk (never all in memory) and counted by field."""

    def __init__(self, path: Path) -> None:
        self.path, self.counts = path, {}
        self.tmp = path.with_name(path.name + ".part")
        self.f = self.tmp.open("w", encoding="utf-8")
        self.f.write("[")

    def add(self, problem: dict) -> None:
        self.f.write(("\n  " if not self.counts else ",\n  ") + json.dumps(problem))
        self.counts[problem["field"]] = self.counts.get(problem["field"], 0) + 1

    def close(self) -> dict[str, int]:
        self.f.write("\n]\n" if self.counts else "]\n")
        self.f.close()
        os.replace(self.tmp, self.path)
        return self.counts


@dataclass
class ShardTask:
    """One chunk to make: its videos (item, located path or None, why not) and how to cut them."""

    name: str
    out: str
    source: str
    videos: list[tuple[ImportItem, str | None, str | None]]
    num_clips: int
    frames_per_clip: int
    max_side: int | None


def shard_meta(source: str, item: ImportItem, spans: list[tuple[float, float]], duration: float) -> dict:
    """The sample meta in the shard schema for one imported video (the item's extras first, core keys win)."""
    return {
        **item.meta,
        "schema": 1,
        "video_id": item.video_id,
        "source": source,
        "duration": float(duration),
        "clips": [[float(s), float(e)] for s, e in spans],
        "questions": [{"memories": None, **q} for q in item.questions],
    }


def _one_line(err: BaseException) -> str:
    return " ".join(f"{type(err).__name__}: {err}".split())


def make_shard(task: ShardTask) -> dict:
    """Cut the chunk's videos into clips and write its shard (temp name, rename, then the done marker).

    Returns:
        The chunk's counts: ``written``, ``questions`` (of which ``open`` open-ended), ``unanswerable``,
        ``missing``, ``failed``.
    """
    counts = {"written": 0, "questions": 0, "open": 0, "unanswerable": 0, "missing": [], "failed": []}
    out = Path(task.out)

    def samples() -> Iterator[VideoSample]:
        for item, path, problem in task.videos:
            if path is None:
                if problem == "missing":
                    counts["missing"].append(item.name)
                else:
                    counts["failed"].append({"video": item.name, "path": None, "error": problem})
                continue
            try:
                clips, spans, duration = segment_video(
                    path, task.num_clips, frames_per_clip=task.frames_per_clip, max_side=task.max_side
                )
                meta = shard_meta(task.source, item, spans, duration)
                validate_meta(meta, len(clips))
            except Exception as e:  # one file's failure is that file's problem, never the import's
                counts["failed"].append({"video": item.name, "path": path, "error": _one_line(e)})
                continue
            counts["written"] += 1
            counts["questions"] += len(item.questions)
            counts["open"] += sum(q.get("kind") == "open" for q in item.questions)
            counts["unanswerable"] += sum(q.get("answer") is None for q in item.questions)
            yield VideoSample(video_id=item.video_id, clips=clips, meta=meta)

    tmp = out / STATE_DIR / f"tmp-{task.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    written = write_shards(samples(), tmp, prefix=task.name, max_per_shard=len(task.videos) + 1)
    if written:
        os.replace(written[0], out / f"{task.name}.tar")
    shutil.rmtree(tmp, ignore_errors=True)
    write_json(out / STATE_DIR / f"{task.name}.json", counts)
    return counts


def _run(
    tasks: Iterator[tuple[ShardTask, int]], workers: int, done: Callable[[str, dict, int], None]
) -> None:
    """Make every task in ``workers`` processes: this one and ``workers - 1`` spawned ones.

    This process makes a shard itself whenever the others have two queued each, so no time is lost
    while they start (spawning one costs seconds: it imports torch).
    """
    if workers == 1:
        for task, questions in tasks:
            done(task.name, make_shard(task), questions)
        return
    # spawn, not fork: the parent may hold decoder or torch threads that a fork would copy half-way
    pool = ProcessPoolExecutor(max_workers=workers - 1, mp_context=multiprocessing.get_context("spawn"))
    pending: dict = {}

    def collect(block: bool) -> None:
        finished = (
            wait(pending, return_when=FIRST_COMPLETED)[0] if block else [f for f in pending if f.done()]
        )
        for f in finished:
            name, questions = pending.pop(f)
            done(name, f.result(), questions)

    try:
        for task, questions in tasks:
            if len(pending) < 2 * (workers - 1):
                pending[pool.submit(make_shard, task)] = (task.name, questions)
            else:
                done(task.name, make_shard(task), questions)
            collect(block=False)
        while pending:
            collect(block=True)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _scan(
    read_items: ReadItems, state: Path, out: Path, buckets: int, part: tuple[int, int], suffix: str
) -> dict:
    """Spill the annotation into buckets once per OUT and part (module docstring); the scan's counts."""
    marker = state / f"scan{suffix}.json"
    if marker.exists():
        return json.loads(marker.read_text(encoding="utf-8"))
    problems = ProblemLog(out / f"problems{suffix}.json")
    try:
        per_bucket = spill(read_items(problems.add), state, buckets, part)
    finally:
        counts = problems.close()
    scan = {
        "questions": {str(b): q for b, q in per_bucket.items()},
        "bad_rows": sum(counts.values()),
    }
    write_json(marker, scan)
    return scan


def import_videos(
    prefix: str,
    read_items: ReadItems,
    ann: str | Path,
    videos_dir: str | Path,
    out_dir: str | Path,
    *,
    num_clips: int = 4,
    frames_per_clip: int = 32,
    max_side: int | None = 448,
    max_per_shard: int = 16,
    limit: int | None = None,
    workers: int = 1,
    part: str | None = None,
) -> dict:
    """Import an annotation's videos as shards under ``out_dir`` (module docstring).

    Args:
        prefix: Shard name prefix and the samples' ``source`` (the format or benchmark name).
        read_items: Yields the annotation's items; reports bad rows to its argument.
        ann: The annotation file or directory (its size fixes the buckets; its path is in the settings).
        videos_dir: Root of the items' ``file`` paths; searched recursively for their ``find`` stems.
        out_dir: Where the shards, ``skipped.json``, ``problems.json`` and ``summary.json`` go.
        num_clips: T, clips per video.
        frames_per_clip: Frames stored per clip.
        max_side: Longest stored frame side (None: the source size).
        max_per_shard: Videos per shard (chunk).
        limit: Stop once about this many videos were written (whole shards; a smoke run, the next run
            goes on).
        workers: Processes making shards side by side (this one included).
        part: ``"i/n"``: make only this machine's share of n (None: all).

    Returns:
        Summary: ``format``, ``part``, ``workers``, ``videos`` (annotated), ``written``, ``questions``,
        ``questions_by_kind`` (``mc`` multiple-choice, ``open`` open-ended), ``unanswerable`` (without a
        gold answer), ``bad_rows``, ``skipped``,
        ``missing``, ``failed``, ``resumed_shards``, ``shards``, ``seconds``, ``videos_per_minute``
        (made in this run).

    Raises:
        FileNotFoundError: ``videos_dir`` is not a directory.
        ValueError: OUT holds an import made with other settings, a bad PART, or workers < 1.
    """
    start = time.perf_counter()
    videos_dir, out = Path(videos_dir), Path(out_dir)
    if not videos_dir.is_dir():
        raise FileNotFoundError(f"videos directory {videos_dir} does not exist")
    if workers < 1:
        raise ValueError(f"WORKERS must be >= 1, got {workers}")
    i, n = part_ = parse_part(part)
    buckets = bucket_count(ann)
    if n > buckets:
        raise ValueError(
            f"PART={i}/{n}: this annotation file has {buckets} buckets, so at most {buckets} parts"
        )
    state = out / STATE_DIR
    state.mkdir(parents=True, exist_ok=True)
    settings = {
        "format": prefix,
        "ann": str(Path(ann).resolve()),
        "buckets": buckets,
        "num_clips": num_clips,
        "frames_per_clip": frames_per_clip,
        "max_side": max_side,
        "max_per_shard": max_per_shard,
    }
    settings_file = state / "settings.json"
    if settings_file.exists():
        old = json.loads(settings_file.read_text(encoding="utf-8"))
        if old != settings:
            raise ValueError(
                f"{out} holds an import made with other settings ({old}); use another OUT or delete it"
            )
    write_json(settings_file, settings)
    suffix = "" if n == 1 else f".part{i}of{n}"
    scan = _scan(read_items, state, out, buckets, part_, suffix)

    per_shard: dict[str, dict] = {}
    stats = {"videos": 0, "resumed": 0, "new": 0}
    bar = tqdm(total=sum(scan["questions"].values()), desc=f"import {prefix}", unit="question")
    index: dict | None = None  # the videos directory by file stem, listed once if an item needs it

    def locate(item: ImportItem) -> tuple[str | None, str | None]:
        nonlocal index
        if item.file is not None:
            path = videos_dir / item.file
            return (str(path), None) if path.is_file() else (None, "missing")
        if index is None:
            index = index_videos(videos_dir)
        path, problem = find_video(index, *item.find)
        return (str(path) if path else None), problem

    def done(name: str, counts: dict, questions: int) -> None:
        per_shard[name] = counts
        stats["new"] += counts["written"]
        bar.update(questions)
        bar.set_postfix(failed=sum(len(c["failed"]) for c in per_shard.values()), refresh=False)

    def tasks() -> Iterator[tuple[ShardTask, int]]:
        for b in (b for b in range(buckets) if owned(b, part_)):
            videos = load_bucket(state, b)
            stats["videos"] += len(videos)
            for name, chunk in chunk_names(prefix, b, videos, max_per_shard):
                questions = sum(len(v.questions) for v in chunk)
                marker = state / f"{name}.json"
                if marker.exists():
                    per_shard[name] = json.loads(marker.read_text(encoding="utf-8"))
                    stats["resumed"] += 1
                    bar.update(questions)
                elif limit is None or sum(c["written"] for c in per_shard.values()) < limit:
                    located = [(v, *locate(v)) for v in chunk]
                    yield (
                        ShardTask(name, str(out), prefix, located, num_clips, frames_per_clip, max_side),
                        questions,
                    )

    _run(tasks(), workers, done)
    bar.close()
    totals = {"written": 0, "questions": 0, "open": 0, "unanswerable": 0, "missing": [], "failed": []}
    for name in sorted(per_shard):
        for k in totals:
            totals[k] += per_shard[name].get(k, type(totals[k])())  # a shard made before kinds: no "open"
    skipped = {"missing": totals["missing"], "failed": totals["failed"]}
    write_json(out / f"skipped{suffix}.json", skipped)
    seconds = time.perf_counter() - start
    summary = {
        "format": prefix,
        "part": f"{i}/{n}",
        "workers": workers,
        "videos": stats["videos"],
        "written": totals["written"],
        "questions": totals["questions"],
        "questions_by_kind": {"mc": totals["questions"] - totals["open"], "open": totals["open"]},
        "unanswerable": totals["unanswerable"],
        "bad_rows": scan["bad_rows"],
        "skipped": len(totals["missing"]) + len(totals["failed"]),
        **skipped,
        "resumed_shards": stats["resumed"],
        "shards": [str(out / f"{k}.tar") for k in sorted(per_shard) if per_shard[k]["written"]],
        "seconds": round(seconds, 2),
        "videos_per_minute": round(60 * stats["new"] / seconds, 2) if stats["new"] else None,
    }
    write_json(out / f"summary{suffix}.json", summary)
    return summary
