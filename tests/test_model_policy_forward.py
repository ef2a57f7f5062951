"""Policy forward: the 3-D multimodal rope is really in use, hidden states, loss, text helpers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from videomem.model.policy import build_policy


@pytest.fixture(scope="module", params=["qwen2_5_vl", "qwen3_vl"])
def policy(request):
    return build_policy(request.param)


def batch(policy, completions=None):
    m = policy.patch_multiple
    g = torch.Generator().manual_seed(0)
    # 2x2 merge blocks per frame pair: several tokens along h and w, so 3-D positions differ from 1-D
    videos = [torch.randint(0, 256, (4, 4 * m, 4 * m, 3), dtype=torch.uint8, generator=g) for _ in range(2)]
    messages = [
        [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": t}]}]
        for t in ("What colour is the big shape?", "Q")
    ]
    return policy.build_inputs(messages, videos, completions)


def test_rope_deltas_nonzero_and_positions_are_3d(policy):
    inputs = batch(policy)
    positions, deltas = policy.rope_positions(inputs)
    assert positions.shape == (3, *inputs.input_ids.shape)
    assert (deltas != 0).all()
    video = inputs.mm_token_type_ids[0] == 2
    t, h, w = positions[:, 0, video]
    assert not torch.equal(h, w) and not torch.equal(t, h)  # a real (t, h, w) grid, not one 1-D ramp
    # text after the video continues from max position + 1; the last prompt token sits at n_real - 1 + delta
    assert positions[0, 0, -1].item() == inputs.attention_mask[0].sum().item() - 1 + deltas[0].item()


def test_logits_differ_from_1d_positions(policy):
    inputs = batch(policy)
    with torch.no_grad():
        logits = policy(inputs).logits
        flat = (inputs.attention_mask.cumsum(-1) - 1).clamp(min=0)  # [B, L] plain 1-D positions
        plain = policy.model(**inputs.model_kwargs(), position_ids=flat.expand(3, -1, -1)).logits
    real = inputs.attention_mask.bool()
    assert (logits - plain)[real].abs().max() > 1e-3


def test_explicit_positions_equal_hf_internal_positions(policy):
    inputs = batch(policy)
    with torch.no_grad():
        ours = policy(inputs).logits
        policy.model.model.rope_deltas = None
        theirs = policy.model(**inputs.model_kwargs()).logits  # HF builds positions from mm_token_type_ids
    torch.testing.assert_close(ours, theirs)


def test_hidden_states_times_lm_head_are_logits(policy):
    inputs = batch(policy)
    with torch.no_grad():
        hidden = policy.hidden_states(inputs)
        logits = policy(inputs).logits
    assert hidden.shape == (*inputs.input_ids.shape, policy.model.config.text_config.hidden_size)
    assert policy.lm_head_weight.shape == (len(policy.tokenizer), hidden.shape[-1])
    torch.testing.assert_close(hidden @ policy.lm_head_weight.T, logits)


def test_loss_is_mean_ce_over_completion_tokens(policy):
    inputs = batch(policy, ["<answer>A</answer>", "<memory>m</memory>"])
    out = policy(inputs)
    logits, labels = out.logits[:, :-1], inputs.labels[:, 1:]
    expected = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)
    torch.testing.assert_close(out.loss, expected)
    out.loss.backward()
    assert policy.model.lm_head.weight.grad is not None
    policy.model.zero_grad(set_to_none=True)


def test_decode_and_count_tokens(policy):
    text = "<memory>two red squares</memory><answer>B</answer>"
    ids = policy.tokenizer(text, add_special_tokens=False)["input_ids"]
    im_end = policy.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert policy.decode(ids) == text
    assert policy.decode(ids + [im_end]) == text  # special tokens dropped, tags kept
    assert policy.count_tokens(text) == len(ids)
    assert policy.count_tokens("") == 0


def test_finer_vision_patches_same_llm_tokens():
    """vision_patch_size 7 with merge 4 covers 28 px per LLM token like 14 x 2: same token count."""
    coarse = build_policy(tiny={"vision_depth": 1})
    fine = build_policy(tiny={"vision_depth": 1, "vision_patch_size": 7, "vision_merge_size": 4})
    assert coarse.patch_multiple == fine.patch_multiple == 28
    video = [torch.zeros(4, 56, 56, 3, dtype=torch.uint8)]
    msgs = [[{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Q"}]}]]
    a, b = coarse.build_inputs(msgs, video), fine.build_inputs(msgs, video)
    assert torch.equal(a.input_ids, b.input_ids)  # 2 frame pairs x 2 x 2 tokens each
    assert b.pixel_values_videos.shape == (2 * 8 * 8, 3 * 2 * 7 * 7)
    assert fine.hidden_states(b).shape == coarse.hidden_states(a).shape


@pytest.mark.parametrize("arch", ["qwen2_5_vl", "qwen3_vl"])
def test_initializer_range_sets_the_init_std_of_both_towers(arch):
    """`initializer_range` reaches the language model, the vision tower and the head."""
    for std in (0.02, 0.1):
        model = build_policy(arch=arch, tiny={"vision_depth": 1, "initializer_range": std}).model
        weights = {
            "embed": model.model.language_model.embed_tokens.weight,
            "q_proj": model.model.language_model.layers[0].self_attn.q_proj.weight,
            "patch_embed": model.model.visual.patch_embed.proj.weight,
            "lm_head": model.lm_head.weight,
        }
        for name, w in weights.items():
            assert abs(w.std().item() - std) < 0.15 * std, (arch, name, std)
