"""Benchmark: the memory loop's cost per clip does not grow with the video (issue: T=32 vs T=4).

Time per clip: T=4 and T=32 loops alternate in THIS process (shared, noisy machines: only the ratio
is reported). Peak memory: each T runs in a fresh subprocess, and the figure is that process's peak
RSS (``ru_maxrss``: model, decoded clips, KV caches and all), what a user would see. The RSS growth
during the loop itself (polled every ms, after a warm-up) is printed beside it: it is well under a
MiB at both T, too small for a meaningful ratio.
The policy is ``logs/sft/latest`` when it exists (a memory that really is written), else the tiny
random policy.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.perf.bench import bench_line

FRAMES, SIZE, NEW_TOKENS = 8, 56, 24
CKPT = Path("logs/sft/latest")


def _policy():
    from videomem.model.policy import Policy, build_policy

    return (Policy.from_pretrained(str(CKPT)) if CKPT.exists() else build_policy("qwen2_5_vl")).eval()


def _qas(num_clips: int, n: int = 2):
    from videomem.data.types import VideoQA

    g = torch.Generator().manual_seed(0)
    return [
        VideoQA(
            video_id=f"v{i}",
            qid="q",
            question="How many red objects appear in the whole video?",
            options=["1", "2", "3", "4"],
            answer="B",
            category="count",
            clips=[
                torch.randint(0, 255, (FRAMES, SIZE, SIZE, 3), generator=g, dtype=torch.uint8)
                for _ in range(num_clips)
            ],
            spans=[(2.0 * t, 2.0 * t + 2) for t in range(num_clips)],
        )
        for i in range(n)
    ]


def _run(policy, qas) -> float:
    from videomem.memory.loop import GenerationConfig, run_memory_loop

    t0 = time.perf_counter()
    run_memory_loop(policy, qas, GenerationConfig(max_new_tokens=NEW_TOKENS))
    return time.perf_counter() - t0


_CHILD = r"""
import json, os, sys, threading, time
sys.path.insert(0, os.getcwd())
import torch
torch.set_num_threads(1)
from tests.perf.test_bench_loop import _policy, _qas, _run
page = os.sysconf("SC_PAGE_SIZE")
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * page
policy = _policy(); qas = _qas(int(sys.argv[1]))
_run(policy, _qas(2))  # warm-up: allocator pools, lazy inits
base = rss(); peak = [base]; done = threading.Event()
def poll():
    while not done.is_set():
        peak[0] = max(peak[0], rss()); time.sleep(0.001)
th = threading.Thread(target=poll); th.start()
_run(policy, qas)
done.set(); th.join()
import resource
print(json.dumps({"peak_delta": max(peak[0] - base, page), "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def _memory(num_clips: int) -> dict[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(num_clips)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.perf
def test_bench_loop_cost_per_clip_is_flat() -> None:
    torch.set_num_threads(1)
    policy = _policy()
    short, long = _qas(4), _qas(32)
    _run(policy, _qas(2))
    per_clip = {4: [], 32: []}
    for _ in range(3):
        per_clip[4].append(_run(policy, short) / 4)
        per_clip[32].append(_run(policy, long) / 32)
    time_ratio = statistics.median(per_clip[32]) / statistics.median(per_clip[4])
    mem = {t: _memory(t) for t in (4, 32)}
    print(
        f"\nloop per clip: T=4 {statistics.median(per_clip[4]) * 1e3:.1f} ms, T=32 {statistics.median(per_clip[32]) * 1e3:.1f} ms;"
        f" peak RSS: T=4 {mem[4]['maxrss'] / 2**20:.0f} MiB, T=32 {mem[32]['maxrss'] / 2**20:.0f} MiB"
        f" (growth during the loop: {mem[4]['peak_delta'] / 2**20:.2f} / {mem[32]['peak_delta'] / 2**20:.2f} MiB);"
        f" policy: {'sft' if CKPT.exists() else 'random'}"
    )
    bench_line("loop_time_per_clip_ratio_T32_T4", time_ratio, "<=", 1.15)
    bench_line("loop_peak_memory_ratio_T32_T4", mem[32]["maxrss"] / mem[4]["maxrss"], "<=", 1.15)
