"""The decode engine against the one it replaced (``tests/reference_decoding.py``): finished samples
leave the batch, yet greedy and seeded sampled tokens are the same; the static (compiled) layout gives
the eager tokens; transformers is handed no cache object; each distinct clip is encoded once."""

from __future__ import annotations

import pytest
import torch

from tests.reference_decoding import reference_generate
from tests.test_model_policy_generate import prompt_parts, sharp_policy
from videomem.model import generation
from videomem.model.decoding import sample_next
from videomem.model.features import shared_vision


@pytest.fixture(scope="module", params=["qwen2_5_vl", "qwen3_vl"])
def policy(request):
    """A tiny policy with sharp random weights whose <|im_end|> logit is raised, so that samples end at
    different steps and the batch really shrinks."""
    policy = sharp_policy(request.param)
    im_end = policy.im_end_id
    hook = policy.model.lm_head.register_forward_hook(
        lambda m, a, out: out.index_add_(-1, torch.tensor([im_end]), torch.full((*out.shape[:-1], 1), 4.0))
    )
    yield policy
    hook.remove()


SETTINGS = [
    {"num_samples": 3, "max_new_tokens": 12},
    {"num_samples": 4, "max_new_tokens": 16, "do_sample": True, "temperature": 1.5},
    {"num_samples": 4, "max_new_tokens": 16, "do_sample": True, "temperature": 1.2, "top_p": 0.9},
]


@pytest.mark.parametrize("settings", SETTINGS, ids=["greedy", "sample", "top_p"])
def test_tokens_equal_the_engine_that_decoded_every_row(policy, settings):
    inputs = policy.build_inputs(*prompt_parts(policy))
    saved_before = policy.decode_stats.row_steps_saved
    lengths = []
    for seed in range(3):
        ours = policy.generate(inputs, generator=torch.Generator().manual_seed(seed), **settings)
        ref = reference_generate(policy, inputs, generator=torch.Generator().manual_seed(seed), **settings)
        assert ours == ref
        lengths += [len(s) for row in ours for s in row]
    if settings.get("do_sample"):
        assert min(lengths) < settings["max_new_tokens"] - 1 < max(lengths)  # some ended early, some ran on
        assert policy.decode_stats.row_steps_saved > saved_before


def test_row_steps_saved_count_the_finished_samples(policy):
    inputs = policy.build_inputs(*prompt_parts(policy))
    before = (policy.decode_stats.row_steps, policy.decode_stats.row_steps_saved)
    out = policy.generate(
        inputs, num_samples=4, max_new_tokens=16, do_sample=True, generator=torch.Generator().manual_seed(1)
    )
    # sample s is computed in the decode forward after each of its tokens except the last (its stop,
    # or the budget); the loop runs a forward after step k while any sample is still live after k
    ended = [min(len(s), 15) for row in out for s in row]  # forwards each sample was part of
    last = max(ended)
    computed = policy.decode_stats.row_steps - before[0]
    saved = policy.decode_stats.row_steps_saved - before[1]
    assert computed == sum(ended) and saved == len(ended) * last - sum(ended) > 0


def test_static_layout_gives_the_eager_tokens(policy, monkeypatch):
    """The compiled path's layout (every row kept, a full-width mask updated in place), run without
    torch.compile: the tokens of the compacting eager path. ``test_compiled_decode_*`` compiles it."""
    monkeypatch.setattr(generation, "_compiled_decode_forward", generation._decode_forward)
    inputs = policy.build_inputs(*prompt_parts(policy))
    for settings in SETTINGS:
        policy.compile_decode = True
        try:
            static = policy.generate(inputs, generator=torch.Generator().manual_seed(2), **settings)
        finally:
            policy.compile_decode = False
        assert static == policy.generate(inputs, generator=torch.Generator().manual_seed(2), **settings)


@pytest.mark.slow
def test_compiled_decode_equals_eager_on_cpu(policy, monkeypatch):
    """torch.compile (inductor, on the CPU here) of the static decode step: the eager tokens."""
    monkeypatch.setattr(generation, "_compiled_decode_forward", None)
    inputs = policy.build_inputs(*prompt_parts(policy))
    for settings in SETTINGS:
        policy.compile_decode = True
        try:
            compiled = policy.generate(inputs, generator=torch.Generator().manual_seed(3), **settings)
        finally:
            policy.compile_decode = False
        assert compiled == policy.generate(inputs, generator=torch.Generator().manual_seed(3), **settings)


def test_transformers_gets_no_cache_object(policy, monkeypatch):
    """The engine keeps its own keys/values: no transformers cache is built or passed (the cache API is
    what changes between transformers releases)."""
    import transformers

    def refuse(*args, **kwargs):
        raise AssertionError("a transformers cache was built")

    monkeypatch.setattr(transformers.DynamicCache, "__init__", refuse)
    monkeypatch.setattr(transformers.StaticCache, "__init__", refuse)
    seen = []
    hook = policy.model.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append(
            {k for k in ("cache", "past_key_values") if kwargs.get(k) is not None}
        ),
        with_kwargs=True,
    )
    try:
        policy.generate(policy.build_inputs(*prompt_parts(policy)), num_samples=2, max_new_tokens=5)
    finally:
        hook.remove()
    assert seen and all(not s for s in seen)


def test_sampling_draw_is_torch_multinomial():
    """The exponential race with noise for every row is the draw torch.multinomial makes."""
    probs = torch.softmax(torch.randn(6, 50, generator=torch.Generator().manual_seed(0)) * 3, dim=-1)
    logits = probs.log()
    for seed in range(5):
        ours = sample_next(logits, True, 1.0, 1.0, torch.Generator().manual_seed(seed))
        ref = torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(seed)).squeeze(-1)
        assert torch.equal(ours, ref)
        rows = torch.tensor([1, 4])  # two live rows of six: the numbers rows 1 and 4 would get anyway
        live = sample_next(logits[rows], True, 1.0, 1.0, torch.Generator().manual_seed(seed), rows, 6)
        assert torch.equal(live, ref[rows])


def test_a_clip_shown_by_several_rows_is_encoded_once(policy):
    messages, videos = prompt_parts(policy)
    same = [videos[0], videos[0], videos[1], videos[0]]  # K memories / chains of one clip: same object
    inputs = policy.build_inputs([messages[0], messages[1], messages[1], messages[0]], same)
    copies = policy.build_inputs(
        [messages[0], messages[1], messages[1], messages[0]], [v.clone() for v in same]
    )  # equal frames, distinct objects: encoded per row, as before
    stats = policy.decode_stats
    before = stats.vision_encodes
    shared = policy.generate(inputs, num_samples=2, max_new_tokens=8)
    assert stats.vision_encodes - before == 2
    assert shared == policy.generate(copies, num_samples=2, max_new_tokens=8)
    assert stats.vision_encodes - before == 2 + 4
    with shared_vision(policy):  # a rollout: a clip encoded by an earlier call is not encoded again
        policy.generate(inputs, num_samples=2, max_new_tokens=4)
        again = policy.generate(policy.build_inputs([messages[0]], [videos[0]]), max_new_tokens=4)
    assert stats.vision_encodes - before == 2 + 4 + 2
    assert policy.vision_cache is None and again[0][0] == shared[0][0][:4]
