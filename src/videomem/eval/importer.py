"""Turn a downloaded benchmark (annotation files + a directory of videos) into the project's shards.

Reads the annotations with the benchmark's module (``videomem.eval.benchmarks``), finds each video by
file name anywhere under the videos directory (users unpack archives differently), cuts it into
``num_clips`` clips with ``segment_video`` (one decode per video) and writes WebDataset shards in the
project's schema (``source`` = the benchmark name, the questions with their benchmark keys).

A missing, ambiguous or undecodable video is skipped, listed and counted (in the returned summary and
in ``skipped.json`` beside the shards); one bad file never stops the import. This module does not
download anything and does not run a model.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

from videomem.data.shards import VideoSample, validate_meta, write_shards
from videomem.data.video import segment_video
from videomem.eval.benchmarks import BENCHMARKS, BenchVideo

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov")


def index_videos(videos_dir: str | Path) -> dict[str, list[Path]]:
    """Every video file under ``videos_dir`` (recursively), by file stem; paths sorted.

    Raises:
        FileNotFoundError: ``videos_dir`` is not a directory.
    """
    root = Path(videos_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"videos directory {root} does not exist")
    index: dict[str, list[Path]] = {}
    for dirpath, _, files in os.walk(root, followlinks=True):
        for f in files:
            p = Path(dirpath) / f
            if p.suffix.lower() in VIDEO_EXTENSIONS:
                index.setdefault(p.stem, []).append(p)
    return {stem: sorted(paths) for stem, paths in index.items()}


def find_video(index: dict[str, list[Path]], video: BenchVideo) -> tuple[Path | None, str | None]:
    """The file of ``video``, or None and why not (``"missing"`` or an ambiguity message).

    Several files with the stem are narrowed to those under a directory named ``video.subdir``.
    """
    candidates = index.get(video.video_name, [])
    if video.subdir and len(candidates) > 1:
        candidates = [p for p in candidates if video.subdir in p.parts[:-1]] or candidates
    if not candidates:
        return None, "missing"
    if len(candidates) > 1:
        return (
            None,
            f"ambiguous: {len(candidates)} files named {video.video_name}: {list(map(str, candidates))}",
        )
    return candidates[0], None


class AnnotationError(ValueError):
    """An annotation file that is not in the benchmark's published form (one line: file, what, why)."""


def read_annotations(name: str, ann: str | Path) -> list[BenchVideo]:
    """``BENCHMARKS[name].read_annotations(ann)``, any failure refused as one `AnnotationError` line.

    A bad annotation (a row without a key, a question without options or with an answer outside them,
    a value of the wrong type) means the wrong file or a broken download: the import stops before any
    video is read instead of writing a partial benchmark whose scores would not compare.
    """
    try:
        videos = BENCHMARKS[name].read_annotations(ann)
    except FileNotFoundError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
        what = f"missing key {err}" if isinstance(err, KeyError) else f"{type(err).__name__}: {err}"
        raise AnnotationError(
            f"{name} annotations {ann} are not in the published form ({what}); "
            f"see videomem.eval.benchmarks.{name} for the expected files"
        ) from err
    if not isinstance(videos, list) or not videos:
        raise AnnotationError(f"{name} annotations {ann} hold no question")
    return videos


def _shard_meta(name: str, video: BenchVideo, spans: list[tuple[float, float]], duration: float) -> dict:
    """The sample's meta in the shard schema (schema 1); benchmark video-level keys first, core keys win."""
    return {
        **video.meta,
        "schema": 1,
        "video_id": video.video_id,
        "source": name,
        "duration": float(duration),
        "clips": [[float(s), float(e)] for s, e in spans],
        "questions": [{**q, "memories": None} for q in video.questions],
    }


def import_benchmark(
    name: str,
    ann: str | Path,
    videos_dir: str | Path,
    out_dir: str | Path,
    *,
    num_clips: int = 4,
    frames_per_clip: int = 32,
    max_side: int | None = 448,
    max_per_shard: int = 16,
    limit: int | None = None,
) -> dict:
    """Import benchmark ``name`` into shards under ``out_dir``.

    Args:
        name: A key of ``BENCHMARKS`` (videomme, lvbench, mlvu, longvideobench, egoschema).
        ann: The annotation file or directory, as published (see the benchmark's module).
        videos_dir: Directory searched recursively for ``{video_name}.{mp4,mkv,webm,avi,mov}``.
        out_dir: Where the shards (``{name}-*.tar``) and ``skipped.json`` go.
        num_clips: T, clips per video.
        frames_per_clip: Frames stored per clip.
        max_side: Longest frame side after resizing (None keeps the source size).
        max_per_shard: Videos per shard.
        limit: Stop after this many videos were written (a smoke run); None imports all.

    Returns:
        Summary: ``benchmark``, ``videos`` (annotated), ``written`` (videos), ``questions`` (written),
        ``unanswerable`` (written questions without a gold letter), ``skipped`` (count), ``missing``
        (video names), ``failed`` ([{video, path, error}]), ``shards`` (paths).

    Raises:
        ValueError: Unknown benchmark name.
        AnnotationError: The annotations are not in the benchmark's published form (nothing is written).
    """
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; known: {sorted(BENCHMARKS)}")
    videos = read_annotations(name, ann)
    index = index_videos(videos_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    missing: list[str] = []
    failed: list[dict] = []
    counts = {"written": 0, "questions": 0, "unanswerable": 0}

    def samples() -> Iterator[VideoSample]:
        bar = tqdm(videos, desc=f"import {name}", unit="video")
        for video in bar:
            if limit is not None and counts["written"] >= limit:
                break
            bar.set_postfix(missing=len(missing), failed=len(failed), refresh=False)
            path, problem = find_video(index, video)
            if path is None:
                if problem == "missing":
                    missing.append(video.video_name)
                else:
                    failed.append({"video": video.video_name, "path": None, "error": problem})
                continue
            try:
                clips, spans, duration = segment_video(
                    path, num_clips, frames_per_clip=frames_per_clip, max_side=max_side
                )
                if len(clips) != num_clips:
                    raise ValueError(f"segment_video gave {len(clips)} clips, expected {num_clips}")
                meta = _shard_meta(name, video, spans, duration)
                validate_meta(meta, num_clips)
            except Exception as e:  # any failure of one file is that file's problem, not the import's
                failed.append(
                    {"video": video.video_name, "path": str(path), "error": f"{type(e).__name__}: {e}"}
                )
                continue
            yield VideoSample(video_id=video.video_id, clips=clips, meta=meta)
            counts["written"] += 1
            counts["questions"] += len(video.questions)
            counts["unanswerable"] += sum(q["answer"] is None for q in video.questions)

    shards = write_shards(samples(), out, prefix=name, max_per_shard=max_per_shard)
    skipped = {"missing": missing, "failed": failed}
    (out / "skipped.json").write_text(json.dumps(skipped, indent=2), encoding="utf-8")
    return {
        "benchmark": name,
        "videos": len(videos),
        **counts,
        "skipped": len(missing) + len(failed),
        **skipped,
        "shards": [str(p) for p in shards],
    }


def main(argv: list[str] | None = None) -> int:
    """CLI: ``--bench --ann --videos --out [--clips --frames-per-clip --max-side --max-per-shard --limit]``.

    Prints the summary as JSON; exits 1 when no video could be written. Unreadable annotations or
    videos directory raise (``AnnotationError``, ``FileNotFoundError``): ``videomem shards`` prints them
    as one line and exits 2.
    """
    p = argparse.ArgumentParser(description="Import a long-video QA benchmark into videomem shards.")
    p.add_argument("--bench", required=True, choices=sorted(BENCHMARKS), help="benchmark name")
    p.add_argument("--ann", required=True, help="annotation file or directory, as published")
    p.add_argument("--videos", required=True, help="directory searched recursively for the video files")
    p.add_argument("--out", required=True, help="output directory for shards and skipped.json")
    p.add_argument("--clips", type=int, default=4, help="clips per video (T)")
    p.add_argument("--frames-per-clip", type=int, default=32, help="frames stored per clip")
    p.add_argument("--max-side", type=int, default=448, help="longest frame side; 0 keeps the source size")
    p.add_argument("--max-per-shard", type=int, default=16, help="videos per shard")
    p.add_argument("--limit", type=int, default=None, help="stop after this many videos were written")
    args = p.parse_args(argv)
    # a bad annotation file or path raises one line; `videomem shards` prints it and exits 2
    summary = import_benchmark(
        args.bench,
        args.ann,
        args.videos,
        args.out,
        num_clips=args.clips,
        frames_per_clip=args.frames_per_clip,
        max_side=args.max_side or None,
        max_per_shard=args.max_per_shard,
        limit=args.limit,
    )
    print(json.dumps(summary, indent=2))
    if summary["written"] == 0:
        print(f"no video of {args.bench} was written: see {Path(args.out) / 'skipped.json'}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
