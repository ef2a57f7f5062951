"""Find an annotation's video file under the videos directory: by relative path, or by file name.

Training sets name each video by its path relative to VIDEOS; benchmarks name it by file stem only
(users unpack their archives differently), so ``index_videos`` lists every video file under VIDEOS
once, by stem, and ``find_video`` picks the one file a stem names.

Deliberately not here: opening or decoding the files.
"""

from __future__ import annotations

import os
from pathlib import Path

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


def find_video(
    index: dict[str, list[Path]], stem: str, subdir: str | None = None
) -> tuple[Path | None, str | None]:
    """The file named ``stem``, or None and why not (``"missing"`` or an ambiguity message).

    Several files with the stem are narrowed to those under a directory named ``subdir``.
    """
    candidates = index.get(stem, [])
    if subdir and len(candidates) > 1:
        candidates = [p for p in candidates if subdir in p.parts[:-1]] or candidates
    if not candidates:
        return None, "missing"
    if len(candidates) > 1:
        return None, f"ambiguous: {len(candidates)} files named {stem}: {list(map(str, candidates))}"
    return candidates[0], None
