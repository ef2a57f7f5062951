"""Clipped surrogate loss: worked numbers, clipping, global normalisation, Liger fused == naive."""

from __future__ import annotations

import math

import pytest
import torch

from videomem.rl.loss import clipped_surrogate_loss, fused_grpo_loss, k3_kl, naive_grpo_loss


def _leaf(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64, requires_grad=True)


def test_zero_advantage_gives_zero_loss_and_zero_gradient():
    torch.manual_seed(0)
    lp = (torch.randn(3, 4, dtype=torch.float64) - 2).requires_grad_()
    old = lp.detach() + 0.5 * torch.randn(3, 4, dtype=torch.float64)  # ratios far from 1, some clipped
    loss, _ = clipped_surrogate_loss(lp, old, torch.zeros(3, dtype=torch.float64), torch.ones(3, 4))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(lp.grad, torch.zeros_like(lp))


def test_ratio_one_loss_is_minus_token_mean_advantage():
    lp = _leaf([[-1.0, -2.0, -0.5], [-0.3, -9.0, -9.0]])
    adv = torch.tensor([1.0, -0.5], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    loss, stats = clipped_surrogate_loss(lp, None, adv, mask)  # old = new
    # tokens: 3 with A=1, 1 with A=-0.5 -> -(3 - 0.5) / 4
    assert loss.item() == pytest.approx(-0.625)
    loss.backward()
    # d/dlp of -r A / N at r = 1 is -A / N on response tokens
    assert torch.allclose(
        lp.grad, torch.tensor([[-0.25, -0.25, -0.25], [0.125, 0.0, 0.0]], dtype=torch.float64)
    )
    assert stats["ratio_mean"].item() == pytest.approx(1.0)
    assert stats["clip_fraction"].item() == 0.0
    assert not stats["ratio_mean"].requires_grad


def test_clipping_engages_outside_the_asymmetric_trust_region():
    ratios = [1.5, 1.1, 0.5, 1.5, 0.5, 1.25]
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0, 1.0, 1.0], dtype=torch.float64)
    lp = _leaf([[0.0]] * 6)
    old = torch.tensor([[-math.log(r)] for r in ratios], dtype=torch.float64)  # exp(lp - old) = r
    loss, stats = clipped_surrogate_loss(lp, old, adv, torch.ones(6, 1), eps_low=0.2, eps_high=0.28)
    loss.backward()
    # per token -min(rA, clip(r)A):
    #   r=1.5, A=+1 -> clip at 1.28: -1.28, no grad      r=1.1, A=+1 -> inside: -1.1, grad -1.1
    #   r=0.5, A=-1 -> clip at 0.8: +0.8, no grad        r=1.5, A=-1 -> min picks rA: +1.5, grad +1.5
    #   r=0.5, A=+1 -> min picks rA: -0.5, grad -0.5     r=1.25, A=+1 -> inside (eps_high 0.28): -1.25
    expected = (-1.28 - 1.1 + 0.8 + 1.5 - 0.5 - 1.25) / 6
    assert loss.item() == pytest.approx(expected)
    grad = torch.tensor([0.0, -1.1, 0.0, 1.5, -0.5, -1.25], dtype=torch.float64) / 6
    assert torch.allclose(lp.grad.squeeze(1), grad)
    assert stats["clip_fraction_high"].item() == pytest.approx(1 / 6)
    assert stats["clip_fraction_low"].item() == pytest.approx(1 / 6)
    assert stats["clip_fraction"].item() == pytest.approx(2 / 6)
    assert stats["ratio_mean"].item() == pytest.approx(sum(ratios) / 6)
    # the same r = 1.25 token IS clipped with a symmetric eps of 0.2
    lp2 = _leaf([[0.0]])
    loss2, _ = clipped_surrogate_loss(lp2, old[5:], adv[5:], torch.ones(1, 1), eps_low=0.2, eps_high=0.2)
    loss2.backward()
    assert loss2.item() == pytest.approx(-1.2) and lp2.grad.item() == 0.0


def test_k3_kl_worked_number_and_penalty():
    lp = _leaf([[math.log(0.5)]])
    ref = torch.tensor([[math.log(0.25)]], dtype=torch.float64)
    # exp(ref - lp) - (ref - lp) - 1 = 0.5 + ln 2 - 1
    assert k3_kl(lp, ref).item() == pytest.approx(0.5 + math.log(2) - 1)
    loss, stats = clipped_surrogate_loss(
        lp, None, torch.zeros(1, dtype=torch.float64), torch.ones(1, 1), ref_logprobs=ref, kl_coef=0.1
    )
    assert loss.item() == pytest.approx(0.1 * (0.5 + math.log(2) - 1))
    assert stats["kl"].item() == pytest.approx(0.5 + math.log(2) - 1)
    loss.backward()
    assert lp.grad.item() == pytest.approx(0.1 * (1 - 0.5))  # d/dlp = 1 - exp(ref - lp)
    with pytest.raises(ValueError):
        clipped_surrogate_loss(lp, None, torch.zeros(1), torch.ones(1, 1), kl_coef=0.1)


def test_micro_batches_with_global_token_count_sum_to_the_full_batch_loss():
    torch.manual_seed(1)
    lp_full = torch.randn(4, 6, dtype=torch.float64)
    old = lp_full + 0.3 * torch.randn(4, 6, dtype=torch.float64)
    adv = torch.randn(4, dtype=torch.float64)
    mask = torch.tensor([[1] * 6, [1, 1, 0, 0, 0, 0], [1] * 3 + [0] * 3, [1] * 5 + [0]])
    a = lp_full.clone().requires_grad_()
    full, _ = clipped_surrogate_loss(a, old, adv, mask)
    full.backward()
    b = lp_full.clone().requires_grad_()
    total = float(mask.sum())  # 16 tokens, unevenly split 6 / 10 by rows
    parts = [
        clipped_surrogate_loss(b[s], old[s], adv[s], mask[s], num_tokens=total)[0]
        for s in (slice(0, 1), slice(1, 4))
    ]
    sum(parts).backward()
    assert (parts[0] + parts[1]).item() == pytest.approx(full.item(), abs=1e-12)
    assert torch.allclose(a.grad, b.grad, atol=1e-12)
    # per-micro-batch means would NOT agree (rows have different lengths): the test can fail
    local = [
        clipped_surrogate_loss(lp_full[s], old[s], adv[s], mask[s])[0] for s in (slice(0, 1), slice(1, 4))
    ]
    assert abs((local[0] + local[1]).item() / 2 - full.item()) > 1e-3


def _random_batch(seed: int, n=3, length=5, hidden=16, vocab=5000):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, length, hidden, generator=g)  # [N, L, H]
    w = 0.3 * torch.randn(vocab, hidden, generator=g)  # [V, H] (vocab > Liger's 4096 chunk)
    ids = torch.randint(0, vocab, (n, length), generator=g)  # [N, L]
    mask = torch.ones(n, length)
    mask[0, 3:] = 0
    mask[2, 1:] = 0
    adv = torch.tensor([1.0, -0.7, 0.4])[:n]
    return h, w, ids, mask, adv, g


@pytest.mark.parametrize("variant", ["on_policy", "old", "old_kl", "temperature_num_tokens"])
def test_liger_fused_matches_naive_loss_and_gradients(variant):
    h, w, ids, mask, adv, g = _random_batch(0)
    with torch.no_grad():
        lp_now = torch.log_softmax(h @ w.T, -1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)  # [N, L]
    kw: dict = {"eps_low": 0.2, "eps_high": 0.28}
    if variant != "on_policy":
        kw["old_logprobs"] = lp_now + 0.4 * torch.randn(lp_now.shape, generator=g)  # some ratios clipped
    if variant == "old_kl":
        kw["ref_logprobs"] = lp_now + 0.2 * torch.randn(lp_now.shape, generator=g)
        kw["kl_coef"] = 0.05
    if variant == "temperature_num_tokens":
        kw["temperature"] = 0.7
        kw["num_tokens"] = 40.0
    results = []
    for fn, extra in ((naive_grpo_loss, {}), (fused_grpo_loss, {"chunk_size": 2, "compiled": False})):
        hh, ww = h.clone().requires_grad_(), w.clone().requires_grad_()
        loss, stats = fn(hh, ww, ids, mask, adv, **kw, **extra)
        loss.backward()
        results.append((loss.detach(), hh.grad, ww.grad, stats))
    (l0, gh0, gw0, s0), (l1, gh1, gw1, s1) = results
    assert l0.abs() > 1e-3 and gh0.abs().max() > 1e-4  # a non-trivial case
    assert torch.allclose(l0, l1, atol=1e-6, rtol=0)
    assert torch.allclose(gh0, gh1, atol=1e-6, rtol=0)
    assert torch.allclose(gw0, gw1, atol=1e-6, rtol=0)
    assert s1["clip_fraction"].item() == pytest.approx(s0["clip_fraction"].item(), abs=1e-6)
    if variant == "old":
        assert s0["clip_fraction"].item() > 0  # the clip is exercised
    if variant == "old_kl":
        assert s1["kl"].item() == pytest.approx(s0["kl"].item(), abs=1e-6)


def test_liger_normaliser_ignores_world_size(monkeypatch):
    """Under an initialised process group Liger divides num_items_in_batch by the world size; we undo it."""
    h, w, ids, mask, adv, _ = _random_batch(3)
    expected, _ = naive_grpo_loss(h, w, ids, mask, adv, num_tokens=20.0)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda group=None: 2)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda group=None: 0)
    got, _ = fused_grpo_loss(h, w, ids, mask, adv, num_tokens=20.0)
    assert got.item() == pytest.approx(expected.item(), abs=1e-6)


def test_fused_micro_batches_sum_to_full_batch():
    h, w, ids, mask, adv, _ = _random_batch(4)
    full, _ = fused_grpo_loss(h, w, ids, mask, adv)
    total = mask.sum()
    parts = [
        fused_grpo_loss(h[s], w, ids[s], mask[s], adv[s], num_tokens=total)[0]
        for s in (slice(0, 1), slice(1, 3))
    ]
    assert (parts[0] + parts[1]).item() == pytest.approx(full.item(), abs=1e-6)
