"""Training-set importers: your own videos + an annotation file -> shards (``make shards BENCH=jsonl|llava``).

``formats.py`` reads the two annotation formats, ``build.py`` writes the shards resumably. The
benchmark importers (Video-MME, LVBench, ...) live in ``videomem.eval.importer``; ``videomem shards``
sends ``--bench jsonl`` and ``--bench llava`` here (``handles``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from videomem.data.importers.build import FORMATS, import_training_set


def handles(argv: list[str]) -> bool:
    """True when ``videomem shards`` arguments name a training-set format (``--bench jsonl`` / ``--bench=llava``)."""
    for i, a in enumerate(argv):
        if a == "--bench" and i + 1 < len(argv):
            return argv[i + 1] in FORMATS
        if a.startswith("--bench="):
            return a.split("=", 1)[1] in FORMATS
    return False


def summary_problems(out: Path) -> list[dict]:
    """The skipped annotation rows an import listed in ``OUT/problems.json``."""
    return json.loads((out / "problems.json").read_text(encoding="utf-8"))


def main(argv: list[str] | None = None) -> int:
    """CLI: ``--bench jsonl|llava --ann FILE --videos DIR --out DIR [--clips T ...]``; prints the summary.

    Exits 1 when no video could be written.
    """
    p = argparse.ArgumentParser(
        description="Import a training set (jsonl or LLaVA JSON) into videomem shards."
    )
    p.add_argument("--bench", required=True, choices=FORMATS, help="annotation format")
    p.add_argument("--ann", required=True, help="annotation file (docs/data.md)")
    p.add_argument("--videos", required=True, help="directory the annotation's video paths are relative to")
    p.add_argument("--out", required=True, help="output directory (shards, skipped.json, problems.json)")
    p.add_argument("--clips", type=int, default=4, help="clips per video (T)")
    p.add_argument("--frames-per-clip", type=int, default=32, help="frames stored per clip")
    p.add_argument("--max-side", type=int, default=448, help="longest frame side; 0 keeps the source size")
    p.add_argument("--max-per-shard", type=int, default=16, help="videos per shard")
    args = p.parse_args(argv)
    summary = import_training_set(
        args.bench,
        args.ann,
        args.videos,
        args.out,
        num_clips=args.clips,
        frames_per_clip=args.frames_per_clip,
        max_side=args.max_side or None,
        max_per_shard=args.max_per_shard,
    )
    print(json.dumps(summary, indent=2))
    out = Path(args.out)
    for p_ in summary["missing"][:5] + [f["video"] for f in summary["failed"][:5]]:
        print(f"skipped video: {p_} (all in {out / 'skipped.json'})")
    for prob in [q for q in summary_problems(out) if q["field"] != "no_options"][:10]:
        where = f"line {prob['line']}" if "line" in prob else f"record {prob['record']!r}"
        print(f"bad row skipped: {where}, field {prob['field']!r}: {prob['error']}", file=sys.stderr)
    if summary["bad_rows"]:
        print(f"{summary['bad_rows']} bad annotation rows skipped: see {out / 'problems.json'}")
    if summary["written"] == 0:
        print(f"no video was written: see {out / 'skipped.json'} and {out / 'problems.json'}")
        return 1
    return 0


__all__ = ["FORMATS", "handles", "import_training_set", "main"]
