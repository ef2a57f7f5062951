"""scripts/gpu_bench.py runs end to end (``--smoke``: tiny model on CPU), so its first GPU run measures
instead of crashing. The figures it prints here mean nothing; docs/performance.md says which are pending."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow  # ~20 s on 2 shared cores (SFT + 2 PRPO steps of the tiny model, checkpointed)
def test_gpu_bench_smoke_on_cpu(tmp_path, script) -> None:
    bench = script("gpu_bench")
    assert bench.main(["--smoke", "--out", str(tmp_path / "bench.json")]) == 0
    result = json.loads((tmp_path / "bench.json").read_text())
    plain = result["sft"]["plain"]
    assert plain["step_s"] > 0 and plain["tokens_per_step"] > 0 and plain["params"] > 0
    assert [r["psp"] for r in result["prpo"]] == [True, False]
    assert all(r["samples_per_step"] == 4 * r["group_size"] * r["questions"] for r in result["prpo"])


def test_full_shape_is_about_two_billion_parameters(script) -> None:
    import torch

    bench = script("gpu_bench")
    with torch.device("meta"):
        policy = bench.build_bench_policy(smoke=False, device="meta", liger=False)
    assert 1.9e9 < bench.param_count(policy) < 2.2e9
