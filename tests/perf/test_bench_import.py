"""Benchmarks of ``make shards`` at scale: videos per minute with 1 and 2 workers, and the memory it
takes to read a large annotation file.

1. Twenty-four 3-minute 640x360 H.264 videos (generated once, cached outside the repository) imported as a
   jsonl training set with T=4 clips of 32 frames, ``workers=1`` then ``workers=2`` (spawned
   processes), alternating, twice; videos per minute of each (wall time, best round), end to end and
   in steady state (from the first shard done to the last, by the done markers' times: what a long
   import sees once the workers have started; spawning them costs seconds, mostly importing torch).
   On a machine shared with other jobs the second worker only gains what a free core gives: the
   ratio is printed with the load average.
2. Peak memory of reading a generated LLaVA-format annotation file of ~300 MB (and of one of ~100 MB,
   to show it does not grow with the file): the import's planning stage (the file read as a stream,
   spilled into buckets, every bucket then loaded and grouped in turn, as the import does) against
   ``json.loads`` of the whole file (what the importer did before). Each runs in a fresh subprocess;
   the figure is its peak RSS (``VmHWM``; ``ru_maxrss`` would carry the peak of the pytest process
   across fork + exec) above the RSS after its imports.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.perf.bench import bench_line
from tests.video_files import CACHE, write_test_video

VIDEOS, MINUTES = 24, 3


def _videos() -> Path:
    root = CACHE / f"import_{VIDEOS}x{MINUTES}min"
    if not (root / "done").exists():
        root.mkdir(parents=True, exist_ok=True)
        for k in range(VIDEOS):
            write_test_video(root / f"v{k}.mp4", MINUTES * 60 * 25, size=(360, 640), gop=125, bframes=0,
                             preset="ultrafast", crf=35, seed=k)  # fmt: skip
        (root / "done").write_text("")
    return root


def _import(videos: Path, out: Path, workers: int) -> tuple[float, float]:
    from videomem.eval.importer import import_shards

    out.parent.mkdir(parents=True, exist_ok=True)
    ann = out.parent / "ann.jsonl"
    ann.write_text("".join(json.dumps({"video": f"v{k}.mp4", "question": "Q?", "options": ["a", "b"],
                                       "answer": "A"}) + "\n" for k in range(VIDEOS)))  # fmt: skip
    t0 = time.perf_counter()
    summary = import_shards("jsonl", ann, videos, out, num_clips=4, frames_per_clip=32, workers=workers)
    seconds = time.perf_counter() - t0
    assert summary["written"] == VIDEOS
    markers = sorted(
        (p.stat().st_mtime, json.loads(p.read_text())["written"])
        for p in (out / ".import").glob("jsonl-*.json")
    )
    steady = 60 * sum(n for _, n in markers[1:]) / (markers[-1][0] - markers[0][0])
    return 60 * VIDEOS / seconds, steady


@pytest.mark.perf
def test_bench_shards_videos_per_minute_with_two_workers(tmp_path):
    videos = _videos()
    rates: dict[int, list[tuple[float, float]]] = {1: [], 2: []}
    for r in range(2):
        for workers in (1, 2):
            rates[workers].append(_import(videos, tmp_path / f"{workers}-{r}" / "out", workers))
    end, steady = ({k: max(x[i] for x in v) for k, v in rates.items()} for i in (0, 1))
    print(
        f"\nmake shards, {VIDEOS} videos of {MINUTES} min 640x360 -> 4 x 32 frames (wall, best of 2, interleaved), "
        f"videos/min end to end: 1 worker {end[1]:.1f}, 2 workers {end[2]:.1f}; in steady state: 1 worker "
        f"{steady[1]:.1f}, 2 workers {steady[2]:.1f} (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)"
    )
    bench_line("shards_videos_per_min_ratio_2_workers_1", end[2] / end[1], ">=", 1.3)
    bench_line("shards_videos_per_min_ratio_2_workers_1_steady", steady[2] / steady[1], ">=", 1.6)


LLAVA_RECORD = {
    "id": "",
    "video": "",
    "data_source": "youtube",
    "conversations": [
        {"from": "human", "value": "<image>\nWhat colour is the jacket of the person who speaks first?\n"
         "A. Red\nB. Blue\nC. Green\nD. Light pink\nPlease respond with only the letter of the correct answer."},
        {"from": "gpt", "value": "D. Light pink."},
        {"from": "human", "value": "How many people are in the room when the door opens?\nA. one\nB. two\nC. three"},
        {"from": "gpt", "value": "B."},
    ],
}  # fmt: skip


def _annotation(megabytes: int) -> Path:
    """A LLaVA-format file of about ``megabytes`` MB: records of 2 questions, 5 records per video."""
    path = CACHE / f"llava_{megabytes}mb.json"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        size = len(json.dumps(LLAVA_RECORD)) + 30
        with open(path.with_suffix(".part"), "w", encoding="utf-8") as f:
            f.write("[")
            for n in range(megabytes * 1_000_000 // size):
                rec = {**LLAVA_RECORD, "id": f"r{n}", "video": f"v{n // 5:07d}.mp4"}
                f.write(("," if n else "") + "\n" + json.dumps(rec))
            f.write("\n]\n")
        os.replace(path.with_suffix(".part"), path)
    return path


PEAK = """
import json, sys, tempfile
from pathlib import Path
from videomem.data.importers.build import ProblemLog
from videomem.data.importers.formats import iter_llava
from videomem.data.importers.plan import bucket_count, load_bucket, spill

def hwm_kib():  # this process's peak RSS: ru_maxrss would carry the parent's peak across fork + exec
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))

path, how = Path(sys.argv[1]), sys.argv[2]
base = hwm_kib()
if how == "loads":
    data = json.loads(path.read_text(encoding="utf-8"))
    n = len(data)
else:
    state = Path(tempfile.mkdtemp())
    buckets = bucket_count(path)
    problems = ProblemLog(state / "problems.json")
    counts = spill(iter_llava(path, problems.add), state, buckets, (1, 1))
    problems.close()
    n = sum(len(load_bucket(state, b)) for b in range(buckets))  # videos, grouped bucket by bucket
peak = hwm_kib()
print(json.dumps({"mb": (peak - base) / 1024, "n": n}))
"""


def _peak(path: Path, how: str) -> dict:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(PEAK), str(path), how], capture_output=True,
                         text=True, timeout=1800, check=True)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.perf
def test_bench_annotation_memory_stays_flat():
    small, large = _annotation(100), _annotation(300)
    stream = {p: _peak(p, "stream") for p in (small, large)}
    loads = _peak(large, "loads")
    mb = lambda p: p.stat().st_size / 1e6  # noqa: E731
    print(
        f"\npeak RSS above start reading a LLaVA file: streamed (the import's planning) {stream[small]['mb']:.0f} MB "
        f"for {mb(small):.0f} MB of JSON, {stream[large]['mb']:.0f} MB for {mb(large):.0f} MB "
        f"({stream[large]['n']} videos); json.loads of the {mb(large):.0f} MB file: {loads['mb']:.0f} MB"
    )
    bench_line("annotation_peak_mb_streamed_300mb", stream[large]["mb"], "<=", 64)
    bench_line(
        "annotation_peak_ratio_streamed_300mb_100mb", stream[large]["mb"] / stream[small]["mb"], "<=", 1.3
    )
    bench_line("annotation_peak_ratio_streamed_json_loads", stream[large]["mb"] / loads["mb"], "<=", 0.2)
