"""Shared-prefill generation: equals HF greedy generate, one vision pass per row, seeded sampling, stops."""

from __future__ import annotations

import pytest
import torch

from videomem.model.decoding import sample_next
from videomem.model.policy import build_policy


def sharp_policy(arch: str):
    """A tiny policy with large random weights: sharp attention, so wrong positions change the tokens."""
    policy = build_policy(arch)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in policy.model.named_parameters():
            if param.dim() == 2 and "language_model" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.25)
    return policy


@pytest.fixture(scope="module", params=["qwen2_5_vl", "qwen3_vl"])
def policy(request):
    return sharp_policy(request.param)


def prompts(policy):
    """Two prompts of different lengths (left padded), different frame sizes."""
    return policy.build_inputs(*prompt_parts(policy))


def prompt_parts(policy):
    """Messages and videos of ``prompts``."""
    m = policy.patch_multiple
    g = torch.Generator().manual_seed(1)
    videos = [
        torch.randint(0, 256, (4, 2 * m, 2 * m, 3), dtype=torch.uint8, generator=g),
        torch.randint(0, 256, (2, 2 * m, m, 3), dtype=torch.uint8, generator=g),
    ]
    messages = [
        [
            {"role": "system", "content": "Answer with memory and answer tags."},
            {
                "role": "user",
                "content": [{"type": "video"}, {"type": "text", "text": "Which shape moved first? A. B."}],
            },
        ],
        [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Q"}]}],
    ]
    return messages, videos


@pytest.mark.parametrize("attn", ["sdpa", "eager"])  # the prefill's attention; decode is always grouped
def test_greedy_equals_hf_generate(policy, attn):
    inputs = prompts(policy)
    assert (inputs.attention_mask == 0).any()  # really left padded
    kwargs = inputs.model_kwargs()
    if policy.arch == "qwen3_vl":
        kwargs.pop("second_per_grid_ts")
    policy.model.set_attn_implementation(attn)
    try:
        ours = policy.generate(inputs, max_new_tokens=12)
        ref = policy.model.generate(
            **kwargs,
            max_new_tokens=12,
            do_sample=False,
            eos_token_id=policy.stop_ids,
            pad_token_id=policy.pad_id,
        )
    finally:
        policy.model.set_attn_implementation("sdpa")
    ref = ref[:, inputs.input_ids.shape[1] :].tolist()
    expected = [[t for t in row if t not in policy.stop_ids] for row in ref]  # HF pads after eos
    assert [r[0] for r in ours] == expected
    assert all(len(r[0]) > 0 for r in ours)


def test_each_sample_decodes_as_if_alone(policy):
    """G sampled continuations share one prompt cache and one attention call per layer, yet the decode
    logits of each equal a cache-free forward of its own prompt + tokens: it sees its own tokens only."""
    messages, videos = prompt_parts(policy)
    inputs = policy.build_inputs(messages, videos)
    logits = []
    hook = policy.model.lm_head.register_forward_hook(
        lambda mod, args, out: logits.append(out[:, -1].clone())
    )
    stops, policy.stop_ids = policy.stop_ids, []  # every sample runs the full budget
    try:
        gen = torch.Generator().manual_seed(0)
        out = policy.generate(
            inputs, num_samples=3, max_new_tokens=6, do_sample=True, temperature=3.0, generator=gen
        )
    finally:
        hook.remove()
        policy.stop_ids = stops
    decode = torch.stack(logits[1:])  # [5, B*G, V]: the forwards after the prefill
    for b, samples in enumerate(out):
        assert len({tuple(s) for s in samples}) > 1  # the samples differ: a leak between them would show
        for g, ids in enumerate(samples):
            alone = policy.build_inputs([messages[b]], [videos[b]], completions=[ids])
            with torch.no_grad():
                ref = policy(alone).logits[0]  # [L, V]
            start = alone.input_ids.shape[1] - len(ids) - 1  # first completion position
            # token k (k >= 1) was sampled from the logits at position start + k - 1
            torch.testing.assert_close(decode[:, b * 3 + g], ref[start : start + 5], rtol=1e-4, atol=1e-3)


def test_greedy_samples_are_identical_copies(policy):
    inputs = prompts(policy)
    one = policy.generate(inputs, max_new_tokens=8)
    three = policy.generate(inputs, num_samples=3, max_new_tokens=8)
    assert [len(r) for r in three] == [3, 3]
    for row_one, row_three in zip(one, three):
        assert row_three == [row_one[0]] * 3


def test_vision_tower_runs_once_per_prompt_row(policy):
    inputs = prompts(policy)
    seen = []
    hook = policy.model.model.visual.register_forward_hook(
        lambda mod, args, out: seen.append(args[0].shape[0])
    )
    try:
        out = policy.generate(inputs, num_samples=4, max_new_tokens=6, do_sample=True)
    finally:
        hook.remove()
    assert seen == [inputs.pixel_values_videos.shape[0]]  # one call, each row's patches once (not x4)
    assert [len(r) for r in out] == [4, 4] and all(len(s) <= 6 for r in out for s in r)


def test_sampling_is_reproducible_with_a_seed(policy):
    inputs = prompts(policy)

    def draw(seed):
        gen = torch.Generator().manual_seed(seed)
        return policy.generate(
            inputs, num_samples=4, max_new_tokens=10, do_sample=True, temperature=2.0, generator=gen
        )

    a, b, c = draw(0), draw(0), draw(1)
    assert a == b
    assert a != c
    assert len({tuple(s) for s in a[0]}) > 1  # samples of one prompt differ from each other


def test_tiny_top_p_is_greedy(policy):
    inputs = prompts(policy)
    greedy = policy.generate(inputs, num_samples=2, max_new_tokens=6)
    nucleus = policy.generate(
        inputs,
        num_samples=2,
        max_new_tokens=6,
        do_sample=True,
        top_p=1e-6,
        generator=torch.Generator().manual_seed(0),
    )
    assert nucleus == greedy


def test_each_sequence_stops_at_im_end_and_strips_it(policy):
    """Force <|im_end|> for row 0 from the 3rd token on; row 1 runs to the budget. The finished samples
    then leave the batch: the later forwards run row 1's two samples only."""
    inputs = prompts(policy)
    im_end = policy.tokenizer.convert_tokens_to_ids("<|im_end|>")
    rows = []

    def force(module, args, out):
        rows.append(out.shape[0])
        if len(rows) >= 3 and out.shape[0] == 4:  # prefill is call 1: tokens 1 and 2 are free
            out[:2, -1, im_end] = 1e4  # rows 0..1 of B*G = both samples of prompt 0
        return out

    hook = policy.model.lm_head.register_forward_hook(force)
    try:
        out = policy.generate(inputs, num_samples=2, max_new_tokens=7)
    finally:
        hook.remove()
    free = policy.generate(inputs, num_samples=1, max_new_tokens=7)
    assert out[0] == [free[0][0][:2]] * 2
    assert out[1] == [free[1][0]] * 2 and len(free[1][0]) == 7
    assert rows == [2, 4, 4, 2, 2, 2, 2]  # prefill (one row per prompt), then B*G until row 0 ends


def test_sample_next_top_p_keeps_the_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    gen = torch.Generator().manual_seed(0)
    draws = {sample_next(logits, True, 1.0, 0.8, gen).item() for _ in range(200)}
    assert draws == {0, 1}  # 0.5 + 0.3 reaches 0.8; tokens 2, 3 are cut
    assert sample_next(logits, False, 1.0, 1.0, None).item() == 0


@pytest.mark.parametrize("do_sample", [False, True])
def test_vision_placeholders_are_never_generated(policy, do_sample):
    """A sampled <|video_pad|> would be read as a video token by the update's forward: it is suppressed."""
    inputs = prompts(policy)
    boost = [policy.video_token_id, policy.image_token_id]

    def favour_placeholders(module, args, out):
        out[..., boost] += 1e4
        return out

    hook = policy.model.lm_head.register_forward_hook(favour_placeholders)
    try:
        out = policy.generate(
            inputs,
            num_samples=4,
            max_new_tokens=6,
            do_sample=do_sample,
            generator=torch.Generator().manual_seed(0),
        )
    finally:
        hook.remove()
    assert set(policy.suppress_ids) >= {policy.video_token_id, policy.image_token_id}
    ids = [t for row in out for sample in row for t in sample]
    assert ids and not set(ids) & set(policy.suppress_ids)
    # so the update can score them: a completion full of placeholders would not match the video features
    messages, videos = prompt_parts(policy)
    hidden, _, mask = policy.group_hidden_states(messages, videos, out)
    assert torch.isfinite(hidden[mask.bool()]).all()
