"""The GPU figures of docs/performance.md (scripts/gpu_bench.py), as BENCH lines; skipped without CUDA.

``make bench`` on a CUDA machine (or ``pytest tests/perf/test_bench_gpu.py -m "gpu and perf" -s``).
Targets are the ones docs/performance.md argues for; a MISS is a finding, not a failure.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from tests.perf.bench import bench_line

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.perf,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]
SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_bench.py"


def test_bench_gpu(tmp_path) -> None:
    spec = importlib.util.spec_from_file_location("gpu_bench", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "bench.json"
    assert bench.main(["--out", str(out)]) == 0
    result = json.loads(out.read_text())
    plain, liger = result["sft"]["plain"], result["sft"]["liger"]
    bench_line("gpu_sft_step_s", plain["step_s"], "<=", 2.0)
    bench_line("gpu_sft_tokens_per_s", plain["tokens_per_s"], ">=", 5000)
    if plain["mfu"] is not None:
        bench_line("gpu_sft_mfu", plain["mfu"], ">=", 0.3)
    bench_line("gpu_sft_peak_mem_gib", plain["peak_mem_gib"], "<=", 40)
    bench_line("gpu_sft_liger_peak_mem_ratio", liger["peak_mem_gib"] / plain["peak_mem_gib"], "<=", 0.9)
    bench_line("gpu_sft_liger_time_ratio", liger["step_s"] / plain["step_s"], "<=", 1.05)
    psp, chains = result["prpo"]
    bench_line("gpu_prpo_rollout_s_psp", psp["rollout_s"], "<=", 60)
    bench_line("gpu_prpo_update_s_psp", psp["update_s"], "<=", 60)
    bench_line("gpu_prpo_rollout_speedup_psp", chains["rollout_s"] / psp["rollout_s"], ">=", 1.5)
    widths = result["width_8b"]
    decode = widths["decode"]
    bench_line(
        "gpu_decode_row_steps_saved_fraction",
        decode["row_steps_saved"] / decode["row_steps_all_rows"],
        ">=",
        0.4,
    )
    bench_line("gpu_shared_clip_vision_encodes", widths["shared_clip"]["vision_encodes"], "<=", 1)
    long = widths["update"][-1]
    bench_line("gpu_update_peak_gib_8b_width_2_layers_W", long["peak_mib"] / 1024, "<=", 20)
