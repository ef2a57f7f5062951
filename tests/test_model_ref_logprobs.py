"""The KL anchor's reference log-probs, chunked over token rows (rl/loss.py ``chunked_token_logprobs``):
bitwise the full [N, L, V] computation that PRPO used before, on the tiny default policy's hidden states
at the default micro-batch shape (32 completions of up to 41 tokens: more rows than one chunk)."""

from __future__ import annotations

import pytest
import torch

from videomem.model.policy import build_policy
from videomem.rl.loss import chunked_token_logprobs


def full_reference(hidden, weight, targets, temperature):
    """The formula PRPO used: full logits, fp32, / temperature, log_softmax, gather."""
    logits = hidden @ weight.T  # [N, L, V]
    logp = torch.log_softmax(logits.float() / temperature, -1)  # [N, L, V]
    return logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # [N, L]


@pytest.fixture(scope="module")
def tiny_batch():
    """Hidden states, targets and mask of 4 prompts x 8 sampled completions from the tiny default policy."""
    policy = build_policy()  # the tiny default (configs/model/tiny_qwen2_5_vl.yaml)
    m = policy.patch_multiple
    gen = torch.Generator().manual_seed(0)
    videos = [torch.randint(0, 256, (8, m, m, 3), dtype=torch.uint8, generator=gen) for _ in range(4)]
    messages = [
        [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": f"Q{i}?"}]}]
        for i in range(4)
    ]
    with torch.no_grad():
        prompts = policy.build_inputs(messages, videos)
        samples = policy.generate(prompts, num_samples=8, max_new_tokens=40, do_sample=True, generator=gen)
        hidden, targets, mask = policy.group_hidden_states(messages, videos, samples)
    return policy, hidden, targets, mask


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_chunked_equals_the_full_computation_bitwise(tiny_batch, temperature):
    policy, hidden, targets, _ = tiny_batch
    n, length, _ = hidden.shape
    assert n == 32 and n * length > 1024  # the default chunk size splits it
    full = full_reference(hidden, policy.lm_head_weight, targets, temperature)
    for chunk in (1024, 256, 100):
        got = chunked_token_logprobs(hidden, policy.lm_head_weight, targets, temperature, chunk_size=chunk)
        assert got.dtype == torch.float32 and got.shape == targets.shape
        assert torch.equal(got, full), chunk


def test_thin_chunks_agree_to_rounding_and_bf16_is_cast(tiny_batch):
    policy, hidden, targets, mask = tiny_batch
    full = full_reference(hidden, policy.lm_head_weight, targets, 1.0)
    thin = chunked_token_logprobs(hidden, policy.lm_head_weight, targets, chunk_size=1)
    torch.testing.assert_close(thin, full, rtol=0, atol=1e-5)
    assert (full[mask > 0] < 0).all()  # real log-probs
    h16, w16 = hidden.bfloat16(), policy.lm_head_weight.bfloat16()
    got = chunked_token_logprobs(h16, w16, targets)
    assert got.dtype == torch.float32 and torch.equal(got, full_reference(h16, w16, targets, 1.0))


def test_bad_input_and_no_rows():
    w = torch.randn(10, 4)
    with pytest.raises(ValueError, match="chunk_size"):
        chunked_token_logprobs(torch.randn(2, 3, 4), w, torch.zeros(2, 3, dtype=torch.long), chunk_size=0)
    with pytest.raises(ValueError, match="disagree"):
        chunked_token_logprobs(torch.randn(2, 3, 4), w, torch.zeros(2, 4, dtype=torch.long))
    empty = chunked_token_logprobs(torch.randn(2, 0, 4), w, torch.zeros(2, 0, dtype=torch.long))
    assert empty.shape == (2, 0)
