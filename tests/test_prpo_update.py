"""PRPO's shared-prefix update: each prompt runs once with its sampled completions packed behind it.

``Policy.group_hidden_states`` must give every completion token the hidden state of the plain
one-row-per-sample forward, so the update's loss and gradients do not change, only its cost.
"""

from __future__ import annotations

import functools

import pytest
import torch

from videomem.model.policy import build_policy
from videomem.rl.rollout import RolloutSample
from videomem.train.prpo import PRPOModule
from videomem.train.update_batches import ended_samples, micro_batches, prompt_groups, update_samples

TINY = {"hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128}


def _prompts(policy, n: int):
    m = policy.patch_multiple
    g = torch.Generator().manual_seed(0)
    videos = [torch.randint(0, 256, (4, 2 * m, 2 * m, 3), dtype=torch.uint8, generator=g) for _ in range(n)]
    texts = ["What colour was the first object?", "Colours in order?", "How many red objects?"][:n]
    messages = [
        [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": t}]}] for t in texts
    ]
    return messages, videos


COMPLETIONS = [
    ["<memory>red object: circle</memory><answer>A</answer>", "x", "<memory>a much longer memory</memory>"],
    ["<memory>first colours so far: red</memory><answer>red blue</answer>", "no no no"],  # open-ended
    ["<memory>red objects so far: 2</memory><answer>C</answer>"],
]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("arch", ["qwen2_5_vl", "qwen3_vl"])
def test_group_hidden_states_equal_one_row_per_completion(arch, attn):
    policy = build_policy(arch, tiny=TINY).eval()
    policy.model.set_attn_implementation({"text_config": attn})  # the reference forward's attention
    messages, videos = _prompts(policy, 3)
    hidden, targets, mask = policy.group_hidden_states(messages, videos, COMPLETIONS)
    flat = [(b, c) for b, cs in enumerate(COMPLETIONS) for c in cs]
    ref_inputs = policy.build_inputs(
        [messages[b] for b, _ in flat], [videos[b] for b, _ in flat], completions=[c for _, c in flat]
    )
    with torch.no_grad():
        ref = policy.hidden_states(ref_inputs)[:, :-1]
    labels = ref_inputs.labels[:, 1:]
    assert hidden.shape[:2] == targets.shape == mask.shape == (len(flat), int(mask.sum(1).max()))
    for n in range(len(flat)):
        real = labels[n] != -100
        k = int(mask[n].sum())
        assert k == int(real.sum()) and not mask[n, k:].any()
        assert torch.equal(targets[n, :k], labels[n][real])  # same tokens, closed with <|im_end|>
        torch.testing.assert_close(hidden[n, :k], ref[n][real], atol=2e-5, rtol=1e-4)


def test_packed_update_builds_no_width_squared_mask(monkeypatch):
    """The packed forward gets no mask from transformers and attends segment by segment: its largest
    mask is one completion's [n, L_p + n] bias, however many completions are packed behind the prompt."""
    from videomem.model import packed

    policy = build_policy("qwen2_5_vl", tiny=TINY).eval()
    messages, videos = _prompts(policy, 1)
    calls, given = [], []
    sdpa = packed.sdpa

    def record(q, k, v, attn_mask=None, **kwargs):
        calls.append((q.shape[2], k.shape[2], type(attn_mask).__name__))
        return sdpa(q, k, v, attn_mask=attn_mask, **kwargs)

    attend = packed.PackedLayout.attend

    def attend_recording(self, module, query, key, value, mask, **kwargs):
        given.append(tuple(mask.shape))
        return attend(self, module, query, key, value, mask, **kwargs)

    monkeypatch.setattr(packed, "sdpa", record)
    monkeypatch.setattr(packed.PackedLayout, "attend", attend_recording)
    completions = [["a b c", "d", "e f g h i"]]
    with torch.no_grad():
        policy.group_hidden_states(messages, videos, completions)
    layers = policy.model.config.text_config.num_hidden_layers
    assert len(calls) == layers * (1 + len(completions[0]))  # the prompt, then each completion
    prompt_calls = calls[:: 1 + len(completions[0])]
    assert all(kind == "NoneType" and q == k for q, k, kind in prompt_calls)  # plain causal, no mask
    width = given[0][-1]  # prompt + all completions
    assert given == [(1, 1, 1, width)] * layers  # an O(W) placeholder: transformers built no mask
    assert all(kind in ("NoneType", "CausalBias") for _, _, kind in calls)
    assert max(q * k for q, k, kind in calls if kind == "CausalBias") < width * width / 4


def _samples(policy) -> list[RolloutSample]:
    messages, videos = _prompts(policy, 3)
    advantages = iter([1.2, -0.4, -0.8, 0.7, -0.7, 0.3])
    out = []
    for b, cs in enumerate(COMPLETIONS):
        for c in cs:
            node = len(out)
            out.append(RolloutSample(node, b, 1, messages[b], videos[b], c, next(advantages), parent_id=b))
    return out[::-1]  # groups interleaved with nothing, but out of order: the update regroups them


def _loss_and_grads(module: PRPOModule, samples, shared: bool):
    module.shared_prefix_update = shared
    module.policy.zero_grad(set_to_none=True)
    tokens = float(sum(module.policy.count_tokens(s.completion) + 1 for s in samples))
    loss, _ = module._micro_loss(samples, tokens, weight=1.0)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in module.policy.named_parameters() if p.grad is not None}
    return loss.detach(), grads


@pytest.mark.parametrize("use_liger", [False, True])
@pytest.mark.parametrize("kl_coef", [0.0, 0.1])
def test_shared_prefix_update_has_the_same_loss_and_gradients(use_liger, kl_coef):
    factory = functools.partial(build_policy, "qwen2_5_vl", tiny=TINY)
    module = PRPOModule(
        policy=factory,
        optimizer=functools.partial(torch.optim.AdamW, lr=1e-3),
        cold_start=False,
        kl_coef=kl_coef,
        use_liger=use_liger,
    )
    module.configure_model()
    if kl_coef:  # a reference that differs from the policy, so the KL term is not zero
        with torch.no_grad():
            for p in module.ref_policy.parameters():
                p.add_(0.01 * torch.randn_like(p))
    samples = _samples(module.policy)
    shared_loss, shared_grads = _loss_and_grads(module, samples, shared=True)
    plain_loss, plain_grads = _loss_and_grads(module, samples, shared=False)
    assert shared_loss.abs() > 0
    torch.testing.assert_close(shared_loss, plain_loss, atol=1e-5, rtol=1e-4)
    assert shared_grads.keys() == plain_grads.keys()
    assert any("visual" in n for n in shared_grads)  # the gradient reaches the vision tower too
    for name, g in plain_grads.items():
        torch.testing.assert_close(shared_grads[name], g, atol=1e-5, rtol=1e-3, msg=name)


def test_micro_batches_keep_prompt_groups_whole():
    policy = build_policy("qwen2_5_vl", tiny=TINY)
    samples = _samples(policy)
    groups = prompt_groups(samples)
    assert sorted(len(g) for g in groups) == [1, 2, 3]
    assert all(len({(s.example_index, s.clip_index, s.parent_id) for s in g}) == 1 for g in groups)
    chunks = micro_batches(samples, 2, whole_groups=True)
    assert sum(len(c) for c in chunks) == len(samples)
    for c in chunks:  # no group is split over two micro-batches
        assert all(
            len(g) == len([s for s in samples if s.parent_id == g[0].parent_id]) for g in prompt_groups(c)
        )
    assert [len(c) for c in micro_batches(samples, 2)] == [2, 2, 2]


def test_rollout_keeps_the_sampled_ids_and_the_update_trains_them():
    from tests.test_memory_loop import make_qa
    from videomem.rl.rollout import RewardConfig, RolloutConfig, prpo_rollout
    from videomem.train.update_batches import trained_completion

    policy = build_policy("qwen2_5_vl", tiny=TINY).eval()
    m = policy.patch_multiple
    qa = make_qa(0, 2)
    qa.clips = [torch.randint(0, 255, (4, m, m, 3), dtype=torch.uint8) for _ in range(2)]
    cfg = RolloutConfig(group_size=3, max_new_tokens=8)
    rollout = prpo_rollout(policy, [qa], cfg, RewardConfig(), generator=torch.Generator().manual_seed(0))
    assert len(rollout.samples) == 6
    for s in rollout.samples:
        assert s.completion_ids is not None and policy.decode(s.completion_ids) == s.completion
        assert trained_completion(s) is s.completion_ids
    # ids that a re-tokenisation of the text would not give back: the update trains the ids
    sample = rollout.samples[0]
    odd = policy._encode("<memory>") + [policy._encode("a")[0], policy._encode("b")[0]]
    sample.completion_ids = odd
    _, targets, mask = policy.group_hidden_states(
        [sample.messages], [sample.video], [[trained_completion(sample)]]
    )
    assert targets[0, : int(mask[0].sum())].tolist() == odd + [policy.im_end_id]


@pytest.mark.parametrize("shared", [True, False])
def test_the_update_raises_the_probability_of_rewarded_tokens(shared):
    """A one-prompt bandit through the real update path: G one-token samples from the shared prefill,
    reward 1 for an even token id, z-scored advantages, ``_micro_loss`` + AdamW. The probability mass
    on even ids (about 0.5 for the random policy) must rise; a sign or plumbing error would lower it or
    leave it flat."""
    from videomem.rl.advantages import group_advantages

    torch.manual_seed(0)
    module = PRPOModule(
        policy=functools.partial(build_policy, "qwen2_5_vl", tiny=TINY),
        optimizer=functools.partial(torch.optim.AdamW, lr=1e-2),
        cold_start=False,
        use_liger=False,
        shared_prefix_update=shared,
    )
    module.configure_model()
    policy = module.policy
    policy.stop_ids = []
    messages, videos = _prompts(policy, 1)
    inputs = policy.build_inputs(messages, videos)
    even = torch.arange(policy.lm_head_weight.shape[0]) % 2 == 0

    def even_mass() -> float:
        with torch.no_grad():
            return float(torch.softmax(policy(inputs).logits[0, -1], -1)[even].sum())

    start = even_mass()
    opt = module.configure_optimizers()
    gen = torch.Generator().manual_seed(0)
    for _ in range(25):  # ~0.99 by then; at lr 1e-2 a saturated tiny policy can swing back later
        policy.eval()
        (ids,) = policy.generate(inputs, num_samples=16, max_new_tokens=1, do_sample=True, generator=gen)
        rewards = torch.tensor([float(s[0] % 2 == 0) for s in ids], dtype=torch.float64)
        adv = group_advantages(rewards, torch.zeros(len(ids), dtype=torch.long)).tolist()
        samples = [
            RolloutSample(k, 0, 0, messages[0], videos[0], policy.decode(s), a, None, s)
            for k, (s, a) in enumerate(zip(ids, adv))
        ]
        policy.train()
        loss, _ = module._micro_loss(samples, float(2 * len(ids)), weight=1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    end = even_mass()
    assert 0.3 < start < 0.7 and end > 0.9, (start, end)


@pytest.mark.parametrize("use_liger", [True, False])
def test_later_epochs_clip_against_the_rollout_policy(use_liger):
    """With epochs > 1 the first pass keeps log pi_old; a later pass over the same samples, after an
    optimiser step, has ratio != 1 and clips. Without the kept log-probs it would be on-policy again
    (ratio 1, nothing clipped) whatever the step did."""
    torch.manual_seed(0)
    module = PRPOModule(
        policy=functools.partial(build_policy, "qwen2_5_vl", tiny=TINY),
        optimizer=functools.partial(torch.optim.SGD, lr=50.0),
        cold_start=False,
        use_liger=use_liger,
        epochs=2,
    )
    module.configure_model()
    policy = module.policy
    messages, videos = _prompts(policy, 1)
    texts = ["<memory>red</memory><answer>A</answer>", "<memory>blue</memory><answer>B</answer>"]
    samples = [
        RolloutSample(k, 0, 0, messages[0], videos[0], t, a, None, policy._encode(t))
        for k, (t, a) in enumerate(zip(texts, [1.0, -1.0]))
    ]
    loss, stats = module._micro_loss(samples, 20.0, weight=1.0, keep_logprobs=True)
    old = stats["logprobs"]
    _, targets, mask = policy.group_hidden_states(
        [messages[0]], [videos[0]], [[s.completion_ids for s in samples]]
    )
    assert old.shape == targets.shape and bool((old[mask.bool()] < 0).all())
    assert float(stats["clip_fraction"]) == 0.0  # the first pass is on-policy
    opt = module.configure_optimizers()
    loss.backward()
    opt.step()
    _, again = module._micro_loss(samples, 20.0, weight=1.0)
    _, later = module._micro_loss(samples, 20.0, weight=1.0, old_logprobs=old)
    assert float(again["clip_fraction"]) == 0.0
    assert float(later["clip_fraction"]) > 0.0


def test_update_samples_skip_zero_advantages_when_asked():
    samples = [
        RolloutSample(k, 0, 0, [], None, "x", a, None, None) for k, a in enumerate([0.0, 1.0, 0.0, -1.0])
    ]
    kept = lambda skip: [s.node_id for s in update_samples(samples, skip)]  # noqa: E731
    assert kept(True) == [1, 3]  # a KL term, if any, acts on the updated samples only
    assert kept(False) == [0, 1, 2, 3]


def test_the_reference_policy_stays_out_of_checkpoints():
    """The KL reference is rebuilt from ``init_from`` on resume: its weights are no part of the module's
    state (a checkpoint would otherwise carry a second copy of the model), nor of its parameters."""
    module = PRPOModule(
        policy=functools.partial(build_policy, "qwen2_5_vl", tiny=TINY),
        optimizer=functools.partial(torch.optim.AdamW, lr=1e-3),
        cold_start=False,
        kl_coef=0.1,
    )
    module.configure_model()
    assert module.ref_policy is not None and not module.ref_policy.training
    assert not [k for k in module.state_dict() if "ref_policy" in k]
    policy_params = {id(p) for p in module.policy.parameters()}
    assert {id(p) for p in module.parameters()} == policy_params
    module.train()
    assert not module.ref_policy.training  # Lightning's train() does not reach it either


def test_overlong_filter_leaves_truncated_samples_out():
    samples = [RolloutSample(k, 0, 0, [], None, "x", 1.0, None, None, truncated=k % 2 == 1) for k in range(4)]
    assert [s.node_id for s in ended_samples(samples, True)] == [0, 2]
    assert [s.node_id for s in ended_samples(samples, False)] == [0, 1, 2, 3]


@pytest.mark.parametrize("open_ended", [False, True])
def test_rollout_marks_the_samples_cut_at_the_budget(open_ended):
    from tests.test_memory_loop import make_qa
    from videomem.rl.rollout import RewardConfig, RolloutConfig, prpo_rollout

    policy = build_policy("qwen2_5_vl", tiny=TINY).eval()
    m = policy.patch_multiple
    qa = make_qa(0, 2)
    if open_ended:  # free text in <answer>: cut at the budget and filtered like a letter answer
        qa.options, qa.answer = [], "red blue"
    qa.clips = [torch.randint(0, 255, (4, m, m, 3), dtype=torch.uint8) for _ in range(2)]
    im_end = policy.im_end_id

    def end_third_sample(module, args, out):  # the 3rd sample of each group ends at its 2nd token
        if out.shape[0] == 3:
            out[2::3, -1, im_end] += 1e4

    stop_early = policy.model.lm_head.register_forward_hook(end_third_sample)
    try:
        rollout = prpo_rollout(
            policy,
            [qa],
            RolloutConfig(group_size=3, max_new_tokens=5),
            RewardConfig(answer_target="provisional"),
            generator=torch.Generator().manual_seed(0),
        )
    finally:
        stop_early.remove()
    truncated = [s.truncated for s in rollout.samples]
    assert truncated == [len(s.completion_ids) == 5 for s in rollout.samples]
    assert truncated == [True, True, False] * 2  # the random policy never stops on its own in 5 tokens
    assert rollout.stats["truncated"] == pytest.approx(4 / 6)
    assert rollout.stats["decode/row_steps_saved"] > 0
