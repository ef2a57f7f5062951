"""``videomem shards``: a benchmark as published, or a training set (jsonl, LLaVA) -> shards.

Every format goes through the one importer, ``videomem.data.importers.build.import_videos`` (resumable,
``--workers`` processes, ``--part i/n`` machines, annotation read as a stream). This module only says
how each format's annotation becomes items: the benchmarks' readers (``videomem.eval.benchmarks``, one
module per benchmark beside its official scorer: the published field names are one piece of knowledge
with two uses) and the training-set readers (``videomem.data.importers.formats``). It sits in the eval
layer because it reads the benchmarks; the engine below it knows no format.

A benchmark's video is found by file name anywhere under the videos directory (users unpack archives
differently); a training set's by its path relative to it. This module does not download anything and
does not run a model.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

from videomem.data.importers.build import import_videos
from videomem.data.importers.formats import FORMATS as TRAINING_FORMATS
from videomem.data.importers.formats import training_items
from videomem.data.importers.plan import ImportItem
from videomem.data.importers.stream import iter_json_array
from videomem.eval.benchmarks import BENCHMARKS, BenchVideo

FORMATS = (*sorted(BENCHMARKS), *TRAINING_FORMATS)


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


def benchmark_items(videos: list[BenchVideo]) -> list[ImportItem]:
    """A benchmark's videos as importer items: found by file stem (and task directory), no memories."""
    return [
        ImportItem(
            v.video_id,
            [{**q, "memories": None} for q in v.questions],
            dict(v.meta),
            find=(v.video_name, v.subdir),
        )
        for v in videos
    ]


def import_shards(fmt: str, ann: str | Path, videos_dir: str | Path, out_dir: str | Path, **kw) -> dict:
    """Import annotation ``ann`` in format ``fmt`` (a benchmark name, ``jsonl`` or ``llava``) as shards.

    Args:
        fmt: One of ``FORMATS``.
        ann: The annotation file or directory, as published (benchmarks: see their modules).
        videos_dir: The videos directory.
        out_dir: Output directory (OUT).
        **kw: ``import_videos`` options: ``num_clips``, ``frames_per_clip``, ``max_side``,
            ``max_per_shard``, ``limit``, ``workers``, ``part``.

    Returns:
        ``import_videos``'s summary.

    Raises:
        ValueError: Unknown format.
        AnnotationError: A benchmark's annotations are not in the published form (nothing is written).
    """
    if fmt in BENCHMARKS:
        items = benchmark_items(read_annotations(fmt, ann))  # small files, checked whole before any work
        return import_videos(fmt, lambda _: items, ann, videos_dir, out_dir, **kw)
    if fmt in TRAINING_FORMATS:
        return import_videos(
            fmt, training_items(fmt, ann, kw.get("num_clips", 4)), ann, videos_dir, out_dir, **kw
        )
    raise ValueError(f"unknown annotation format {fmt!r}; known: {list(FORMATS)}")


def _report(summary: dict, out: Path, suffix: str) -> None:
    """Print the first skipped videos and bad rows (all of them are in OUT's json files)."""
    skipped, problems = out / f"skipped{suffix}.json", out / f"problems{suffix}.json"
    for name in summary["missing"][:5] + [f["video"] for f in summary["failed"][:5]]:
        print(f"skipped video: {name} (all in {skipped})")
    if summary["bad_rows"]:
        for prob in itertools.islice(iter_json_array(problems), 10):
            where = f"line {prob['line']}" if "line" in prob else f"record {prob['record']!r}"
            print(f"bad row skipped: {where}, field {prob['field']!r}: {prob['error']}", file=sys.stderr)
        print(f"{summary['bad_rows']} bad annotation rows skipped: see {problems}")


def main(argv: list[str] | None = None) -> int:
    """CLI: ``--bench FORMAT --ann A --videos DIR --out DIR [--clips T --workers N --part i/n ...]``.

    Prints the summary as JSON; exits 1 when no video could be written. A bad annotation file, videos
    directory or setting raises (``AnnotationError``, ``FileNotFoundError``, ``ValueError``):
    ``videomem shards`` prints it as one line and exits 2.
    """
    p = argparse.ArgumentParser(description="Import a benchmark or a training set into videomem shards.")
    p.add_argument("--bench", required=True, choices=FORMATS, help="benchmark name, or jsonl / llava")
    p.add_argument(
        "--ann", required=True, help="annotation file or directory (docs/data.md, docs/benchmarks.md)"
    )
    p.add_argument("--videos", required=True, help="the videos directory")
    p.add_argument(
        "--out", required=True, help="output directory (shards, summary.json, skipped.json, problems.json)"
    )
    p.add_argument("--clips", type=int, default=4, help="clips per video (T)")
    p.add_argument("--frames-per-clip", type=int, default=32, help="frames stored per clip")
    p.add_argument("--max-side", type=int, default=448, help="longest frame side; 0 keeps the source size")
    p.add_argument("--max-per-shard", type=int, default=16, help="videos per shard")
    p.add_argument("--limit", type=int, default=None, help="stop once about this many videos were written")
    p.add_argument("--workers", type=int, default=1, help="processes making shards side by side")
    p.add_argument("--part", default=None, help="i/n: make only this machine's share of n (docs/data.md)")
    args = p.parse_args(argv)
    summary = import_shards(
        args.bench,
        args.ann,
        args.videos,
        args.out,
        num_clips=args.clips,
        frames_per_clip=args.frames_per_clip,
        max_side=args.max_side or None,
        max_per_shard=args.max_per_shard,
        limit=args.limit,
        workers=args.workers,
        part=args.part,
    )
    print(json.dumps(summary, indent=2))
    i, n = summary["part"].split("/")
    _report(summary, Path(args.out), "" if n == "1" else f".part{i}of{n}")
    if summary["written"] == 0:
        print(f"no video was written: see {Path(args.out)} (skipped*.json, problems*.json)")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
