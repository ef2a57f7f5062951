"""Write a training set (annotation file + videos directory) as shards, resumably.

The videos of the annotation file, in its order, are cut into chunks of ``max_per_shard``; chunk i
becomes ``OUT/<format>-<i:06d>.tar``. Each video is decoded once and cut into T clips by
``segment_video`` (the benchmark importers' segmentation), with the shard schema of ``data/shards.py``.

Resuming: a chunk is written to a temporary directory under ``OUT/.import/``, renamed into place, and
only then marked done (``OUT/.import/<shard>.json``, its counts). A rerun after a kill skips the done
chunks without decoding a frame and redoes the one that was cut short; a half-written tar never has
a ``.tar`` name in OUT. The settings of the first run are kept in ``OUT/.import/settings.json`` and a
rerun with other settings is refused (its chunks would not line up).

A missing or undecodable video is skipped, listed and counted (``OUT/skipped.json``); a bad
annotation row is skipped, listed and counted (``OUT/problems.json``). Nothing here downloads, and
nothing reads the model.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

from videomem.data.importers.formats import TrainVideo, read_jsonl, read_llava
from videomem.data.shards import VideoSample, validate_meta, write_shards
from videomem.data.video import segment_video

FORMATS = ("jsonl", "llava")
STATE_DIR = ".import"


def read_annotations(fmt: str, ann: str | Path, num_clips: int) -> tuple[list[TrainVideo], list[dict]]:
    """Videos and skipped-row problems of an annotation file in format ``fmt`` ("jsonl" or "llava")."""
    if fmt == "jsonl":
        return read_jsonl(ann, num_clips)
    if fmt == "llava":
        return read_llava(ann)
    raise ValueError(f"unknown training-set format {fmt!r}; expected one of {FORMATS}")


def _write_json(path: Path, obj: object) -> None:
    """Write JSON atomically (temp file + rename)."""
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(obj, indent=2), encoding="utf-8")
    os.replace(tmp, path)


def video_meta(fmt: str, video: TrainVideo, spans: list[tuple[float, float]], duration: float) -> dict:
    """The sample meta in the shard schema for one imported video."""
    return {
        **video.meta,
        "schema": 1,
        "video_id": video.video_id,
        "source": fmt,
        "duration": float(duration),
        "clips": [[float(s), float(e)] for s, e in spans],
        "questions": [dict(q) for q in video.questions],
    }


def _chunk_samples(
    fmt: str, chunk: list[TrainVideo], videos_dir: Path, counts: dict, seg_kw: dict, bar: tqdm
) -> Iterator[VideoSample]:
    """Decode and segment each video of a chunk; missing / failed videos go to ``counts`` lists."""
    for video in chunk:
        bar.update(1)
        path = videos_dir / video.rel_path
        if not path.is_file():
            counts["missing"].append(video.rel_path)
            continue
        try:
            clips, spans, duration = segment_video(path, seg_kw["num_clips"], **seg_kw["kw"])
            if len(clips) != seg_kw["num_clips"]:
                raise ValueError(f"segment_video gave {len(clips)} clips, expected {seg_kw['num_clips']}")
            meta = video_meta(fmt, video, spans, duration)
            validate_meta(meta, len(clips))
        except Exception as e:  # one file's failure is that file's problem, never the import's
            counts["failed"].append({"video": video.rel_path, "error": f"{type(e).__name__}: {e}"})
            continue
        counts["written"] += 1
        counts["questions"] += len(video.questions)
        yield VideoSample(video_id=video.video_id, clips=clips, meta=meta)
        bar.set_postfix(missing=len(counts["missing"]), failed=len(counts["failed"]), refresh=False)


def import_training_set(
    fmt: str,
    ann: str | Path,
    videos_dir: str | Path,
    out_dir: str | Path,
    *,
    num_clips: int = 4,
    frames_per_clip: int = 32,
    max_side: int | None = 448,
    max_per_shard: int = 16,
) -> dict:
    """Import a training set in format ``fmt`` into shards under ``out_dir`` (resumable; module docstring).

    Args:
        fmt: ``"jsonl"`` or ``"llava"`` (``formats.py``).
        ann: The annotation file.
        videos_dir: Root the annotation's video paths are relative to.
        out_dir: Where ``<fmt>-*.tar``, ``skipped.json`` and ``problems.json`` go.
        num_clips: T, clips per video.
        frames_per_clip: Frames stored per clip.
        max_side: Longest stored frame side (None: the source size).
        max_per_shard: Videos per shard (chunk).

    Returns:
        Summary: ``format``, ``videos`` (annotated), ``written``, ``questions`` (written), ``bad_rows``,
        ``skipped`` (videos), ``missing``, ``failed``, ``resumed_shards`` (chunks found done), ``shards``.

    Raises:
        FileNotFoundError: ``videos_dir`` is not a directory.
        ValueError: OUT holds an import made with other settings.
    """
    videos_dir, out = Path(videos_dir), Path(out_dir)
    if not videos_dir.is_dir():
        raise FileNotFoundError(f"videos directory {videos_dir} does not exist")
    videos, problems = read_annotations(fmt, ann, num_clips)
    state = out / STATE_DIR
    state.mkdir(parents=True, exist_ok=True)
    settings = {
        "format": fmt,
        "ann": str(Path(ann).resolve()),
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
    _write_json(settings_file, settings)
    _write_json(out / "problems.json", problems)

    chunks = [videos[i : i + max_per_shard] for i in range(0, len(videos), max_per_shard)]
    seg_kw = {"num_clips": num_clips, "kw": {"frames_per_clip": frames_per_clip, "max_side": max_side}}
    totals = {"written": 0, "questions": 0, "missing": [], "failed": []}
    shards, resumed = [], 0
    bar = tqdm(total=len(videos), desc=f"import {fmt}", unit="video")
    for i, chunk in enumerate(chunks):
        name = f"{fmt}-{i:06d}"
        marker = state / f"{name}.json"
        if marker.exists():
            counts = json.loads(marker.read_text(encoding="utf-8"))
            resumed += 1
            bar.update(len(chunk))
        else:
            counts = {"written": 0, "questions": 0, "missing": [], "failed": []}
            tmp = state / f"tmp-{name}"
            shutil.rmtree(tmp, ignore_errors=True)
            written = write_shards(
                _chunk_samples(fmt, chunk, videos_dir, counts, seg_kw, bar), tmp, max_per_shard=len(chunk)
            )
            if written:
                os.replace(written[0], out / f"{name}.tar")
            shutil.rmtree(tmp, ignore_errors=True)
            _write_json(marker, counts)
        if counts["written"]:
            shards.append(str(out / f"{name}.tar"))
        for k in totals:
            totals[k] += counts[k]
    bar.close()
    skipped = {"missing": totals["missing"], "failed": totals["failed"]}
    _write_json(out / "skipped.json", skipped)
    return {
        "format": fmt,
        "videos": len(videos),
        "written": totals["written"],
        "questions": totals["questions"],
        "bad_rows": len([p for p in problems if p["field"] != "no_options"]),
        "no_options_turns": len([p for p in problems if p["field"] == "no_options"]),
        "skipped": len(totals["missing"]) + len(totals["failed"]),
        **skipped,
        "resumed_shards": resumed,
        "shards": shards,
    }
