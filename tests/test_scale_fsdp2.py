"""FSDP2 through Lightning's ModelParallelStrategy with 2 processes on CPU/gloo (configs/trainer/fsdp2.yaml).

One ``torchrun --standalone --nproc-per-node 2 tests/scale_fsdp2_worker.py`` run (about 35 s on 2 busy
cores, marked ``distributed``) does SFT (2 steps + validation), gathered generation with a different decode
length per rank, and a PRPO step; the tests below read what each rank wrote. The sharded Lightning
checkpoint it leaves is exported and compared with the policy the run saved itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from videomem.export import export
from videomem.model.policy import Policy

pytestmark = pytest.mark.distributed
WORKER = Path(__file__).with_name("scale_fsdp2_worker.py")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, list[dict]]:
    from videomem.data.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("fsdp2")
    generate_dataset(root / "data" / "synthetic", splits={"train": 4, "val": 2}, workers=1)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        str(WORKER),
        str(root),
        "240",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=WORKER.parent.parent, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return root, [json.loads((root / f"result_rank{r}.json").read_text()) for r in range(2)]


def test_sft_shards_every_parameter_and_trains(run) -> None:
    _, results = run
    for r in results:
        assert r["world"] == 2 and r["global_step"] == 2
        assert r["all_dtensor"] and r["num_params"] > 0
        assert r["local_shard_numel"] * 2 == r["full_numel"]  # each rank holds half of every tensor
        assert r["val_accuracy_logged"]  # validation ran (weights gathered) on both ranks, no deadlock
    assert results[0]["changed"] and not results[0]["unchanged"]


def test_gathered_generation_with_unequal_lengths(run) -> None:
    _, results = run
    assert results[0]["decode_budget"] != results[1]["decode_budget"]  # ranks ran different forward counts
    for r in results:
        assert r["generate_equal"]  # sharded + gathered == the same weights unsharded (greedy)
        assert r["all_dtensor_after_generate"]  # resharded on exit


def test_prpo_step_updates_the_sharded_policy(run) -> None:
    _, results = run
    for r in results:
        assert r["prpo_global_step"] == 1 and r["prpo_all_dtensor"]
        assert r["prpo_kl_logged"] and r["ref_resharded"]  # the KL term ran on the sharded reference
    assert results[0]["prpo_changed"] > 0  # fused GRPO loss on the root-held lm_head reached the weights


def test_prpo_false_saves_the_gathered_initial_policy(run) -> None:
    _, results = run
    assert results[0]["cold_start_saved_equal"]  # the whole SFT policy, not one rank's shards


def test_export_of_the_sharded_checkpoint(run, tmp_path) -> None:
    root, _ = run
    out = export(root / "run" / "checkpoints" / "last.ckpt", tmp_path / "export")
    exported, saved = Policy.from_pretrained(out), Policy.from_pretrained(root / "run" / "policy")
    a, b = exported.state_dict(), saved.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
