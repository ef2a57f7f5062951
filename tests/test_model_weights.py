"""model/weights.py: a checkpoint read a shard at a time (FSDP ranks load only what they hold).

The 2-rank FSDP2 load runs in tests/test_scale_fsdp2.py (step 4) and in ``make rehearse`` (peak memory
per rank against the checkpoint's size); here the pieces on one process.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from videomem.model.checkpoint import build_policy
from videomem.model.weights import SafetensorsFile, load_weights, parameters_on_meta

TINY = {"hidden_size": 64, "num_hidden_layers": 1, "intermediate_size": 128}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("policy")
    policy = build_policy("qwen3_vl", tiny=TINY)
    policy.save_pretrained(path)
    return policy, path


def test_rows_read_from_disk_equal_the_stored_tensor(tmp_path):
    tensors = {
        "a": torch.arange(24, dtype=torch.float32).reshape(6, 4),
        "b": torch.randn(5, 2, 3).to(torch.bfloat16),
        "s": torch.tensor(3.5),
    }
    save_file(tensors, tmp_path / "x.safetensors")
    f = SafetensorsFile(tmp_path / "x.safetensors")
    assert torch.equal(f.read_rows("a", 2, 5), tensors["a"][2:5])
    assert torch.equal(f.read_rows("b", 0, 5), tensors["b"])
    assert f.read_rows("b", 3, 3).shape == (0, 2, 3)
    assert torch.equal(f.read_rows("s", 0, 1), tensors["s"].reshape(1))


def test_meta_build_then_load_equals_the_saved_policy(saved):
    policy, path = saved
    empty = build_policy("qwen3_vl", path=str(path), weights=False)
    assert all(p.is_meta for p in empty.parameters()) and empty.weights_dir == path
    assert not any(b.is_meta for b in empty.buffers())  # rotary tables are real
    buffers = {n: b.clone() for n, b in empty.named_buffers()}
    empty.to_empty(device="cpu")
    for n, b in empty.named_buffers():
        b.copy_(buffers[n])
    load_weights(empty.model, path)
    a, b = policy.state_dict(), empty.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_older_qwen2_5_vl_names_and_errors(tmp_path):
    policy = build_policy("qwen2_5_vl", tiny=TINY)
    stored = {}
    for name, value in policy.model.state_dict().items():  # as the released Qwen2.5-VL files name them
        name = name.replace("model.language_model.", "model.").replace("model.visual.", "visual.")
        stored[name] = value.to(torch.bfloat16)  # bf16 on disk, fp32 in memory
    save_file(stored, tmp_path / "model.safetensors")
    with parameters_on_meta():
        fresh = type(policy.model)(policy.model.config)
    fresh.to_empty(device="cpu")
    load_weights(fresh, tmp_path)
    for name, p in fresh.named_parameters():
        assert torch.equal(p, policy.model.state_dict()[name].to(torch.bfloat16).float()), name

    del stored["lm_head.weight"]
    save_file(stored, tmp_path / "model.safetensors")
    with pytest.raises(KeyError, match=r"no weights for 1 parameters, e.g. \['lm_head.weight'\]"):
        load_weights(fresh, tmp_path)
    stored["lm_head.weight"] = torch.zeros(3, 3)
    save_file(stored, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="lm_head.weight has shape"):
        load_weights(fresh, tmp_path)


def test_parameters_on_meta_leaves_other_modules_alone():
    with parameters_on_meta():
        inside = torch.nn.Linear(3, 2)
    outside = torch.nn.Linear(3, 2)
    assert inside.weight.is_meta and not outside.weight.is_meta
