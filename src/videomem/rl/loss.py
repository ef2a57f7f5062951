"""PRPO's policy loss: a token-level clipped surrogate (method.md section 3, update DECISION).

    r_{i,l}  = exp(log pi(o_{i,l}) - log pi_old(o_{i,l}))
    L        = -1/N_tok * sum_{i,l} m_{i,l} [ min(r A_i, clip(r, 1 - eps_low, 1 + eps_high) A_i)
                                              - kl_coef * KL3_{i,l} ]
    KL3_{i,l} = exp(ref - lp) - (ref - lp) - 1          (k3 estimator of KL(pi || pi_ref), >= 0)

The asymmetric clip (eps_low 0.2, eps_high 0.28) is DAPO's "clip-higher". N_tok is the number of
response tokens of the GLOBAL batch (all micro-batches, all ranks), passed in by the caller as
``num_tokens``; the functions here never communicate, so micro-batch losses simply add up to the global
token mean. (Under DDP, which averages gradients over ranks, the caller multiplies the loss by the
world size to keep that meaning.)

Three implementations with one meaning:
- ``clipped_surrogate_loss``: the math on per-token log-probs (the reference).
- ``naive_grpo_loss``: hidden states -> full logits -> log_softmax -> gather -> the reference.
  Materialises [N, L, V] logits; for tests and small vocabularies.
- ``fused_grpo_loss``: Liger's ``LigerFusedLinearGRPOLoss``, which never materialises the logits
  (chunked over vocab and sequence). Its ``loss_type='dapo'`` with ``num_items_in_batch`` is exactly
  ``sum(per-token loss * mask) / N_tok`` (see ``fused_grpo_loss``).

``chunked_token_logprobs`` gives per-token log-probs from hidden states a chunk of token rows at a
time: the frozen reference policy's log-probs of the KL anchor, without [N, L, V] fp32 logits.
"""

from __future__ import annotations

import torch
from torch import Tensor

from videomem.data.distributed import rank_and_world

Stats = dict[str, Tensor]


def k3_kl(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """Per-token k3 estimator of KL(pi || pi_ref): exp(ref - lp) - (ref - lp) - 1 (Schulman 2020)."""
    delta = ref_logprobs - logprobs  # [N, L]
    return torch.exp(delta) - delta - 1.0  # [N, L]


def clipped_surrogate_loss(
    logprobs: Tensor,
    old_logprobs: Tensor | None,
    advantages: Tensor,
    mask: Tensor,
    *,
    eps_low: float = 0.2,
    eps_high: float = 0.28,
    ref_logprobs: Tensor | None = None,
    kl_coef: float = 0.0,
    num_tokens: float | Tensor | None = None,
) -> tuple[Tensor, Stats]:
    """Token-level clipped surrogate loss of PRPO's policy update (method.md section 3).

    Args:
        logprobs: [N, L] log pi_theta of the sampled tokens (with grad).
        old_logprobs: [N, L] log pi_old at sampling time; None means on-policy (``logprobs.detach()``,
            ratio 1, the first pass of a single-epoch update).
        advantages: [N] one advantage per sequence.
        mask: [N, L] 1 on response tokens, 0 on prompt / padding.
        eps_low: Lower clip, ratios below 1 - eps_low stop pushing down.
        eps_high: Upper clip, ratios above 1 + eps_high stop pushing up.
        ref_logprobs: [N, L] log pi_ref for the KL term (needed iff kl_coef != 0; else only logged).
        kl_coef: Weight of the k3 KL penalty.
        num_tokens: Normaliser N_tok, the global response-token count; defaults to ``mask.sum()``.
            Clamped below at 1 (an empty batch gives loss 0).

    Returns:
        ``(loss, stats)``; stats (detached, means over THIS call's masked tokens): ``clip_fraction``
        (= low + high), ``clip_fraction_low`` (r < 1 - eps_low with A < 0), ``clip_fraction_high``
        (r > 1 + eps_high with A > 0): the tokens whose gradient the clip removes; ``ratio_mean``;
        ``kl`` when a reference is given.
    """
    if kl_coef != 0.0 and ref_logprobs is None:
        raise ValueError("kl_coef != 0 needs ref_logprobs")
    m = mask.to(logprobs.dtype)  # [N, L]
    keep = m > 0  # [N, L]
    if old_logprobs is None:
        old_logprobs = logprobs.detach()
    # Zero the log-ratio off the mask so garbage log-probs there cannot overflow exp() (inf * 0 = nan).
    log_ratio = torch.where(keep, logprobs - old_logprobs, torch.zeros_like(logprobs))  # [N, L]
    ratio = torch.exp(log_ratio)  # [N, L]
    adv = advantages.to(logprobs.dtype).unsqueeze(1)  # [N, 1]
    clipped_ratio = torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high)  # [N, L]
    per_token = -torch.min(ratio * adv, clipped_ratio * adv)  # [N, L]
    kl = None
    if ref_logprobs is not None:
        kl = k3_kl(logprobs, torch.where(keep, ref_logprobs, logprobs.detach()))  # [N, L]
        if kl_coef != 0.0:
            per_token = per_token + kl_coef * kl  # [N, L]
    if num_tokens is None:
        num_tokens = m.sum()
    normaliser = torch.clamp(
        torch.as_tensor(num_tokens, dtype=logprobs.dtype, device=logprobs.device), min=1.0
    )
    loss = (per_token * m).sum() / normaliser  # []

    with torch.no_grad():
        local = m.sum().clamp(min=1.0)  # []
        low = ((ratio < 1.0 - eps_low) & (adv < 0)).to(m.dtype)  # [N, L]
        high = ((ratio > 1.0 + eps_high) & (adv > 0)).to(m.dtype)  # [N, L]
        stats: Stats = {
            "clip_fraction_low": (low * m).sum() / local,
            "clip_fraction_high": (high * m).sum() / local,
            "ratio_mean": (ratio * m).sum() / local,
        }
        stats["clip_fraction"] = stats["clip_fraction_low"] + stats["clip_fraction_high"]
        if kl is not None:
            stats["kl"] = (kl * m).sum() / local
    return loss, {k: v.detach() for k, v in stats.items()}


def token_logprobs(logits: Tensor, target_ids: Tensor, temperature: float = 1.0) -> Tensor:
    """log softmax(logits / temperature) at the target ids: [N, L, V], [N, L] -> [N, L] (float32 or wider)."""
    logits = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits  # [N, L, V]
    if temperature != 1.0:  # skip a full [N, L, V] pass when it is a no-op
        logits = logits / temperature  # [N, L, V]
    logp = torch.log_softmax(logits, dim=-1)  # [N, L, V]
    return logp.gather(-1, target_ids.unsqueeze(-1)).squeeze(-1)  # [N, L]


def chunked_token_logprobs(
    hidden: Tensor,
    lm_head_weight: Tensor,
    target_ids: Tensor,
    temperature: float = 1.0,
    chunk_size: int = 1024,
) -> Tensor:
    """``token_logprobs(hidden @ W^T, targets, temperature)`` without the [N, L, V] logits.

    The N*L token rows go through the output projection in ceil(N*L / chunk_size) near-equal chunks of
    at most ``chunk_size`` rows; each chunk's logits are cast to fp32, divided by the temperature,
    log-softmaxed and gathered before the next, so at most [chunk_size, V] logits exist at once (vs
    [N, L, V] in the model dtype plus two fp32 copies). Each row's logits are the same dot products as
    in the full matmul, but a BLAS may pick another kernel for a very thin matrix (measured with MKL
    on the CPU: chunks of 1-3 rows, or 8 rows with 2 threads, differ from the full matmul in the last
    bit); near-equal chunks are never thinner than ``chunk_size // 2`` (unless N*L is), so the default
    gives bitwise the full computation's values on the tiny CPU default (tests/test_rl_loss.py).

    Args:
        hidden: [N, L, H] hidden states at the positions that predict ``target_ids``.
        lm_head_weight: [V, H] output projection.
        target_ids: [N, L] token ids.
        temperature: Logits are divided by it (the sampling temperature).
        chunk_size: Token rows per chunk (> 0).

    Returns:
        [N, L] float32 (or wider) log-probs of the targets.
    """
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be > 0, got {chunk_size}")
    if hidden.shape[:-1] != target_ids.shape:
        raise ValueError(f"hidden {tuple(hidden.shape)} and target_ids {tuple(target_ids.shape)} disagree")
    rows = hidden.reshape(-1, hidden.shape[-1])  # [N*L, H]
    targets = target_ids.reshape(-1)  # [N*L]
    if rows.shape[0] == 0:  # no token rows at all
        return torch.zeros(target_ids.shape, dtype=torch.float32, device=hidden.device)
    chunks = -(-rows.shape[0] // chunk_size)  # near-equal chunks: no thin tail chunk
    out = [
        token_logprobs(h @ lm_head_weight.T, y, temperature)  # [C, H] @ [H, V] -> [C, V] -> [C]
        for h, y in zip(torch.tensor_split(rows, chunks), torch.tensor_split(targets, chunks))
    ]
    return torch.cat(out).reshape(target_ids.shape)  # [N, L]


def naive_grpo_loss(
    hidden: Tensor,
    lm_head_weight: Tensor,
    target_ids: Tensor,
    mask: Tensor,
    advantages: Tensor,
    *,
    old_logprobs: Tensor | None = None,
    ref_logprobs: Tensor | None = None,
    eps_low: float = 0.2,
    eps_high: float = 0.28,
    kl_coef: float = 0.0,
    temperature: float = 1.0,
    num_tokens: float | Tensor | None = None,
) -> tuple[Tensor, Stats]:
    """Reference: logits = hidden @ W^T, log_softmax, gather, then ``clipped_surrogate_loss``.

    Args:
        hidden: [N, L, H] final hidden states at the positions that PREDICT ``target_ids``.
        lm_head_weight: [V, H] output projection.
        target_ids: [N, L] sampled tokens.
        mask, advantages, old_logprobs, ref_logprobs, eps_low, eps_high, kl_coef, num_tokens:
            as in ``clipped_surrogate_loss``.
        temperature: Sampling temperature; logits are divided by it (must match generation).
    """
    logits = hidden @ lm_head_weight.T  # [N, L, V]
    logprobs = token_logprobs(logits, target_ids, temperature)  # [N, L]
    return clipped_surrogate_loss(
        logprobs,
        old_logprobs,
        advantages,
        mask,
        eps_low=eps_low,
        eps_high=eps_high,
        ref_logprobs=ref_logprobs,
        kl_coef=kl_coef,
        num_tokens=num_tokens,
    )


def fused_grpo_loss(
    hidden: Tensor,
    lm_head_weight: Tensor,
    target_ids: Tensor,
    mask: Tensor,
    advantages: Tensor,
    *,
    old_logprobs: Tensor | None = None,
    ref_logprobs: Tensor | None = None,
    eps_low: float = 0.2,
    eps_high: float = 0.28,
    kl_coef: float = 0.0,
    temperature: float = 1.0,
    num_tokens: float | Tensor | None = None,
    chunk_size: int = 1,
    compiled: bool = False,
) -> tuple[Tensor, Stats]:
    """``naive_grpo_loss`` through Liger's fused linear GRPO loss (no [N, L, V] logits in memory).

    Normalisation: Liger's ``loss_type='dapo'`` computes ``sum(per_token_loss * mask) / normaliser``
    with ``normaliser = num_items_in_batch / world_size`` (TRL's convention, where DDP's gradient
    averaging undoes the world size). We pass ``num_items_in_batch = num_tokens * world_size``, so the
    normaliser is exactly ``num_tokens`` on one process or many: the same loss as
    ``clipped_surrogate_loss`` (same clip, same k3 KL, same min(., 1) clamp), and, since we always pass
    it, Liger never all-reduces the mask inside the call. ``kl_coef == 0`` -> ``use_ref_model=False``
    (no reference log-probs needed).

    Args:
        hidden: [N, L, H] (must be 3-D).
        lm_head_weight: [V, H].
        target_ids, mask, advantages, old_logprobs, ref_logprobs, eps_low, eps_high, kl_coef,
            temperature, num_tokens: as in ``naive_grpo_loss``.
        chunk_size: Sequences per Liger chunk.
        compiled: ``torch.compile`` Liger's loss math (slow to compile; False in tests).

    Returns:
        ``(loss, stats)``: stats ``clip_fraction`` and, when kl_coef != 0, ``kl`` (Liger's metrics,
        same definitions as ``clipped_surrogate_loss``'s), detached.
    """
    from liger_kernel.chunked_loss import LigerFusedLinearGRPOLoss

    if hidden.dim() != 3:
        raise ValueError(f"hidden must be [N, L, H], got {tuple(hidden.shape)}")
    use_ref = kl_coef != 0.0
    if use_ref and ref_logprobs is None:
        raise ValueError("kl_coef != 0 needs ref_logprobs")
    m = mask.to(torch.float32)  # [N, L]
    if num_tokens is None:
        num_tokens = m.sum()
    loss_fn = LigerFusedLinearGRPOLoss(
        beta=kl_coef,
        compiled=compiled,
        use_ref_model=use_ref,
        chunk_size=chunk_size,
        epsilon_low=eps_low,
        epsilon_high=eps_high,
        loss_type="dapo",
        temperature=temperature,
    )
    loss, metrics = loss_fn(
        hidden,
        lm_head_weight,
        target_ids,
        m,
        advantages,
        ref_per_token_logps=ref_logprobs if use_ref else None,
        old_per_token_logps=old_logprobs,
        num_items_in_batch=torch.as_tensor(num_tokens, dtype=torch.float32, device=hidden.device)
        * rank_and_world()[1],
    )
    # Liger's metrics: [kl] if beta != 0, then the clip fraction (low-with-A<0 | high-with-A>0).
    stats: Stats = {"clip_fraction": metrics[-1].detach()}
    if use_ref:
        stats["kl"] = metrics[0].detach()
    return loss, stats
