"""Evaluation on the accelerator, in the dtype the policy trained in: device and dtype resolution, the
policy actually placed there, the decode group read by the commands that are not Hydra entry points.

The CUDA side (a bf16-mixed policy evaluated in bfloat16 on a GPU) is in tests/test_eval_gpu.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from videomem.cli import main
from videomem.eval.geometry import POLICY_FILE
from videomem.eval.runtime import decode_settings, precision_dtype, resolve_device, resolve_dtype

TINY = {"hidden_size": 64, "num_hidden_layers": 1}
CUDA = torch.device("cuda", 0)  # a device object only: nothing is allocated on it here


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory) -> Path:
    from videomem.model.policy import build_policy

    path = tmp_path_factory.mktemp("policy")
    build_policy("qwen2_5_vl", tiny=TINY, system_prompt="").save_pretrained(path)
    return path


def trained_in(src: Path, dst: Path, precision: str | None) -> Path:
    """A copy of the policy at ``src`` whose saved geometry says it trained in ``precision``."""
    shutil.copytree(src, dst)
    meta = json.loads((dst / POLICY_FILE).read_text())
    meta["geometry"] = {
        "height": 28,
        "width": 28,
        "frames_per_clip": 2,
        "clips": None,
        "precision": precision,
    }
    (dst / POLICY_FILE).write_text(json.dumps(meta))
    return dst


@pytest.mark.skipif(torch.cuda.is_available(), reason="auto picks the GPU there (tests/test_eval_gpu.py)")
def test_auto_is_the_cpu_without_cuda_and_cuda_is_refused_in_one_line() -> None:
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="not a device"):
        resolve_device("gpu0")


def test_the_dtype_follows_the_training_precision_on_cuda_and_is_float32_on_the_cpu(
    tmp_path, policy_dir
) -> None:
    bf16 = trained_in(policy_dir, tmp_path / "bf16", "bf16-mixed")
    fp32 = trained_in(policy_dir, tmp_path / "fp32", "32-true")
    unknown = trained_in(policy_dir, tmp_path / "unknown", None)
    assert resolve_dtype("auto", CUDA, bf16) == torch.bfloat16
    assert resolve_dtype("auto", CUDA, fp32) == torch.float32
    assert resolve_dtype("auto", CUDA, unknown) == torch.float32  # saved in float32: its weights' dtype
    assert resolve_dtype("auto", torch.device("cpu"), bf16) == torch.float32  # CPU: float32 unless asked
    assert resolve_dtype("bfloat16", torch.device("cpu"), fp32) == torch.bfloat16  # asked
    config = json.loads((unknown / "config.json").read_text())
    (unknown / "config.json").write_text(json.dumps({**config, "dtype": "bfloat16"}))  # a real Qwen-VL dir's
    assert resolve_dtype("auto", CUDA, unknown) == torch.bfloat16
    assert [precision_dtype(p) for p in ("bf16-true", "16-mixed", "64-true", "transformer-engine")] == [
        torch.bfloat16,
        torch.float16,
        torch.float32,
        None,
    ]
    with pytest.raises(ValueError, match="dtype='fp8'"):
        resolve_dtype("fp8", CUDA, bf16)


def test_make_eval_loads_the_policy_in_its_dtype_onto_the_device(compose_cfg, tmp_path, policy_dir) -> None:
    from videomem.run_eval import load_policy

    cfg = compose_cfg("eval", [f"ckpt={policy_dir}"])
    policy = load_policy(cfg, torch.device("meta"), torch.bfloat16)  # meta: where, not what, is checked
    params = list(policy.parameters())
    assert {p.device.type for p in params} == {"meta"} and {p.dtype for p in params} == {torch.bfloat16}
    assert not policy.training


def test_a_bfloat16_evaluation_runs_and_says_so(compose_cfg, tmp_path, policy_dir) -> None:
    from videomem.data.synthetic import generate_dataset
    from videomem.run_eval import run

    generate_dataset(tmp_path / "data", splits={"test": 1}, num_clips=2, workers=1)
    ckpt = trained_in(policy_dir, tmp_path / "p", "bf16-mixed")
    overrides = [f"ckpt={ckpt}", f"shards={tmp_path / 'data' / 'test'}", "decode.eval.max_new_tokens=3"]
    result = run(compose_cfg("eval", [*overrides, "dtype=bfloat16", "limit=2"]))
    assert (
        result["n"] == 2
        and result["settings"]["dtype"] == "bfloat16"
        and result["settings"]["device"] == "cpu"
    )
    assert (
        run(compose_cfg("eval", [*overrides, "limit=1"]))["settings"]["dtype"] == "float32"
    )  # auto on a CPU


def test_the_decode_groups_are_read_by_name_and_a_wrong_name_lists_them() -> None:
    tiny, paper = decode_settings("tiny"), decode_settings("paper")
    assert (tiny.max_new_tokens, tiny.do_sample) == (48, False)  # the tiny default's budget, unchanged
    assert (paper.max_new_tokens, paper.do_sample) == (1280, False)
    with pytest.raises(ValueError, match=r"no decode config 'big': use one of \['paper', 'tiny'\]"):
        decode_settings("big")


def test_answer_runs_where_and_as_long_as_it_is_told(policy_dir, capsys) -> None:
    from videomem.cli import sample_video

    args = ["answer", sample_video(), "--question", "q", "--option", "a", "--option", "b", "--clips", "2"]
    args += ["--frames-per-clip", "2", "--frame-size", "28", "28", "--checkpoint", str(policy_dir)]
    assert main([*args, "--device", "cpu", "--max-new-tokens", "3"]) == 0
    assert "policy on cpu in torch.float32, up to 3 new tokens per clip step" in capsys.readouterr().out
    assert main([*args, "--decode", "big"]) == 2
    assert "no decode config 'big'" in capsys.readouterr().err
