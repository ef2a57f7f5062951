"""Policy save / load: our round trip, plain HF checkpoint dirs (like a real Qwen-VL), build_policy."""

from __future__ import annotations

import json

import pytest
import torch

from videomem.model.policy import Policy, build_policy


def logits(policy: Policy) -> torch.Tensor:
    m = policy.patch_multiple
    video = torch.randint(
        0, 256, (2, m, 2 * m, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    messages = [[{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Q: what?"}]}]]
    inputs = policy.build_inputs(messages, [video])
    with torch.no_grad():
        return policy(inputs).logits


@pytest.mark.parametrize("arch", ["qwen2_5_vl", "qwen3_vl"])
def test_save_load_round_trip(arch, tmp_path):
    policy = build_policy(arch, seed=3)
    policy.save_pretrained(tmp_path)
    meta = json.loads((tmp_path / "videomem_policy.json").read_text())
    assert meta["arch"] == arch and meta["patch_size"] * meta["merge_size"] == policy.patch_multiple
    loaded = Policy.from_pretrained(tmp_path)
    assert loaded.arch == arch and loaded.patch_multiple == policy.patch_multiple
    assert loaded.image_mean == policy.image_mean and loaded.stop_ids == policy.stop_ids
    assert loaded.tokenizer.chat_template == policy.tokenizer.chat_template
    assert loaded.tokenizer.padding_side == "left"
    torch.testing.assert_close(logits(loaded), logits(policy), rtol=0, atol=0)


@pytest.mark.parametrize("arch", ["qwen2_5_vl", "qwen3_vl"])
def test_from_plain_hf_checkpoint_dir(arch, tmp_path):
    """A dir written by model.save_pretrained + tokenizer.save_pretrained, no videomem_policy.json."""
    policy = build_policy(arch, seed=4)
    policy.model.save_pretrained(tmp_path)
    policy.tokenizer.save_pretrained(tmp_path)
    loaded = Policy.from_pretrained(tmp_path, dtype="float32")
    assert type(loaded.model) is type(policy.model) and loaded.arch == arch
    assert loaded.image_mean == policy.image_mean  # arch default (CLIP for 2.5-VL, 0.5 for 3-VL)
    torch.testing.assert_close(logits(loaded), logits(policy), rtol=0, atol=0)


def test_chat_template_and_norm_found_beside_the_tokenizer(tmp_path):
    """Real checkpoints keep the template in chat_template.json and mean/std in preprocessor_config.json."""
    policy = build_policy("qwen2_5_vl")
    template = policy.tokenizer.chat_template
    policy.model.save_pretrained(tmp_path)
    policy.tokenizer.chat_template = None
    policy.tokenizer.save_pretrained(tmp_path)
    policy.tokenizer.chat_template = template
    (tmp_path / "chat_template.json").write_text(json.dumps({"chat_template": template}))
    (tmp_path / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": [0.1] * 3, "image_std": [0.2] * 3})
    )
    loaded = Policy.from_pretrained(tmp_path)
    assert loaded.tokenizer.chat_template == template
    assert loaded.image_mean == (0.1, 0.1, 0.1) and loaded.image_std == (0.2, 0.2, 0.2)


def test_build_policy_checks(tmp_path):
    policy = build_policy("qwen3_vl")
    policy.save_pretrained(tmp_path)
    assert build_policy("qwen3_vl", path=str(tmp_path)).arch == "qwen3_vl"
    with pytest.raises(ValueError, match="qwen3_vl"):
        build_policy("qwen2_5_vl", path=str(tmp_path))
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "llava"}))
    with pytest.raises(ValueError, match="model_type"):
        Policy.from_pretrained(tmp_path)


def test_build_policy_seed_dtype_and_global_rng():
    state = torch.random.get_rng_state()
    a, b, c = build_policy(seed=0), build_policy(seed=0), build_policy(seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is untouched
    wa, wb, wc = (p.model.lm_head.weight for p in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    bf16 = build_policy(
        dtype="bfloat16", tiny={"hidden_size": 64, "num_attention_heads": 2, "num_key_value_heads": 1}
    )
    assert bf16.model.dtype == torch.bfloat16 and bf16.model.config.text_config.hidden_size == 64
    assert logits(bf16).dtype == torch.bfloat16
