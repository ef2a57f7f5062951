"""Evaluation on CUDA: ``device=auto`` puts the policy and every batch on the GPU, in the dtype the
policy trained in (bfloat16 for bf16-mixed); under torchrun the ranks talk over NCCL and give the JSON
of one process. Needs a CUDA machine (marker ``gpu``; the 2-rank test needs 2 GPUs):

    .venv/bin/python -m pytest -m gpu tests/test_eval_gpu.py

The CPU side of the same logic is tests/test_eval_runtime.py and tests/test_eval_distributed.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from videomem.eval.geometry import POLICY_FILE

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]
TINY = {"hidden_size": 64, "num_hidden_layers": 1}


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny policy saved as a bf16-mixed run saves it, and 4 synthetic test videos in 3 shards."""
    from videomem.data.synthetic import generate_dataset
    from videomem.model.checkpoint import FrameGeometry
    from videomem.model.policy import build_policy

    root = tmp_path_factory.mktemp("gpu")
    policy = build_policy("qwen2_5_vl", tiny=TINY, system_prompt="")
    policy.save_pretrained(root / "policy", geometry=FrameGeometry(28, 28, 2, precision="bf16-mixed"))
    generate_dataset(root / "data", splits={"test": 4}, num_clips=2, seed=3, workers=1, max_per_shard=2)
    return root / "policy", root / "data" / "test"


def test_make_eval_runs_on_the_gpu_in_bfloat16(compose_cfg, setup) -> None:
    from videomem.run_eval import load_policy, run

    policy_dir, shards = setup
    cfg = compose_cfg("eval", [f"ckpt={policy_dir}", f"shards={shards}", "decode.eval.max_new_tokens=6"])
    policy = load_policy(cfg, torch.device("cuda", 0), torch.bfloat16)
    assert {(p.device.type, p.dtype) for p in policy.parameters()} == {("cuda", torch.bfloat16)}
    seen = []
    policy.model.register_forward_pre_hook(
        lambda _, args, kwargs: seen.append(kwargs["input_ids"].device), with_kwargs=True
    )
    from videomem.data.shards import iter_shard_videoqa
    from videomem.memory.loop import GenerationConfig, run_memory_loop

    questions = list(iter_shard_videoqa(shards, frames_per_clip=2, frame_size=(28, 28)))[:2]
    run_memory_loop(policy, questions, GenerationConfig(max_new_tokens=3))
    assert seen and {d.type for d in seen} == {"cuda"}  # every batch moved to the policy's device
    result = run(cfg)  # device=auto, dtype=auto
    assert result["settings"]["device"] == "cuda" and result["settings"]["dtype"] == "bfloat16"
    assert result["n"] == 12


def test_answer_and_the_clip_sweep_use_the_gpu(setup, tmp_path, capsys) -> None:
    from videomem.cli import main, sample_video

    policy_dir, _ = setup
    args = ["answer", sample_video(), "--question", "q", "--option", "a", "--option", "b", "--clips", "2"]
    args += ["--frames-per-clip", "2", "--checkpoint", str(policy_dir), "--max-new-tokens", "3"]
    assert main(args) == 0
    assert "policy on cuda:0 in torch.bfloat16" in capsys.readouterr().out
    clips = [
        "clips",
        "--ckpt",
        str(policy_dir),
        "--clips",
        "1",
        "--videos",
        "1",
        "--out",
        str(tmp_path / "c"),
    ]
    assert main([*clips, "--data", str(tmp_path / "d")]) == 0
    assert "policy on cuda:0 in torch.bfloat16" in capsys.readouterr().out


@pytest.mark.distributed
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL needs one GPU per rank")
def test_two_ranks_over_nccl_give_the_json_of_one_process(setup, tmp_path) -> None:
    policy_dir, shards = setup
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = ["-m", "videomem.run_eval", f"ckpt={policy_dir}", f"shards={shards}", "batch_size=2"]
    common += ["decode.eval.max_new_tokens=6"]
    subprocess.run(
        [sys.executable, *common, f"hydra.run.dir={tmp_path / 'one'}"], env=env, check=True, timeout=600
    )
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    subprocess.run(
        [*launch, *common, f"hydra.run.dir={tmp_path / 'ranks'}"], env=env, check=True, timeout=600
    )
    one = json.loads((tmp_path / "one" / "eval.json").read_text())
    ranks = json.loads((tmp_path / "ranks" / "eval.json").read_text())
    assert one["settings"]["dtype"] == "bfloat16" and ranks == one


def test_a_policy_without_a_saved_precision_runs_in_its_weights_dtype(setup, tmp_path) -> None:
    from videomem.eval.runtime import resolve_device, resolve_dtype

    policy_dir, _ = setup
    plain = tmp_path / "plain"
    shutil.copytree(policy_dir, plain)
    meta = json.loads((plain / POLICY_FILE).read_text())
    (plain / POLICY_FILE).write_text(json.dumps({**meta, "geometry": None}))
    device = resolve_device("auto")
    assert device.type == "cuda" and resolve_dtype("auto", device, plain) == torch.float32
