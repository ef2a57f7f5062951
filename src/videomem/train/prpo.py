"""PRPO (method.md section 3): GRPO-style RL with PSP rollouts and TCR rewards, manual optimisation.

One training step = one batch of questions:
  1. rollout (no grad, eval mode): ``videomem.rl.rollout.prpo_rollout`` -> T*G samples per example
     with their group advantages, the PSP tree for inspection;
  2. update (train mode): micro-batches of (prompt_t, O_i, A_i); hidden states -> clipped surrogate
     through Liger's fused linear GRPO loss (or the plain-torch reference), normalised by the
     response-token count of the GLOBAL batch; ``manual_backward``, ``clip_gradients``, ``step``.
Samples with zero advantage add nothing to the loss or gradient when there is no KL term, so they
are skipped in the update (their tokens still count in the normaliser). Under DDP every rank runs
the same number of micro-batches (padding with zero-weight ones), and gradients are reduced over ranks
once per optimizer step under DDP (in the last micro-batch's backward), in every backward under FSDP2
(``train/parallel.py`` ``backward_sync``). Which samples the update trains, in which micro-batches:
``train/update_batches.py``. The logged metrics are those of every
rank's samples (``train/rank_metrics.py``).
Under ModelParallelStrategy the policy (and the reference policy) is sharded with FSDP2 in
``configure_model``; the rollout runs with the weights gathered (``gathered_for_generation``), so
ranks that decode different numbers of tokens never wait on each other's all-gathers.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.distributed as dist
from lightning import LightningModule
from torch import nn

from videomem.data.distributed import rank_and_world
from videomem.data.types import VideoQA
from videomem.memory.loop import GenerationConfig
from videomem.rl.loss import chunked_token_logprobs, fused_grpo_loss, naive_grpo_loss, token_logprobs
from videomem.rl.rewards import RewardConfig
from videomem.rl.rollout import RolloutConfig, RolloutSample, prpo_rollout
from videomem.train.parallel import (
    backward_sync,
    configure_policy,
    gathered_for_generation,
    is_sharded,
    reshard,
)
from videomem.train.rank_metrics import prpo_step_metrics
from videomem.train.resume import gather_per_rank, this_rank
from videomem.train.update_batches import (
    ended_samples,
    micro_batches,
    prompt_groups,
    trained_completion,
    update_samples,
)
from videomem.train.validation import LoopValidation


class PRPOModule(LightningModule):
    """PRPO on a Qwen-VL policy.

    Args:
        policy: Factory returning a ``Policy`` (called with ``path=init_from`` when ``cold_start``).
        optimizer: Partial optimizer.
        scheduler: Partial LR scheduler (stepped every optimizer step) or None.
        rollout: ``RolloutConfig`` fields (G, K, psp, tau schedule, sampling).
        reward: ``RewardConfig`` fields (alpha, beta, L_max, tcr, memory_penalty, schedule).
        init_from: SFT checkpoint dir to start from.
        cold_start: False starts from ``policy()`` as configured (base or tiny random) instead.
        eps_low: Lower clip of the ratio.
        eps_high: Upper clip of the ratio.
        kl_coef: KL to the reference policy (0: no reference model is loaded).
        epochs: Optimisation passes over each rollout batch.
        micro_batch_size: Samples per forward/backward (with ``shared_prefix_update``: whole prompt
            groups, filled up to at least this many samples).
        use_liger: Liger fused linear GRPO loss (else the plain-torch reference).
        liger_chunk_size: Sequences per Liger chunk.
        skip_zero_advantage: Skip zero-advantage samples in the update (their surrogate gradient is
            zero). With ``kl_coef > 0`` the KL term then acts on the updated samples only, which
            keeps the update at the cost of the run without KL plus one reference forward (the
            token-mean normaliser still counts every sample).
        overlong_filter: Leave samples cut at ``max_new_tokens`` (no stop token) out of the update and
            its normaliser (docs/method.md section 3, DECISION); False trains them as if they ended.
        shared_prefix_update: Run each prompt (and its clip through the vision tower) once per update
            micro-batch with its G sampled completions packed behind it (``Policy.group_hidden_states``),
            as the rollout prefilled it once; False: one full prompt + completion row per sample. Same
            loss and gradients either way (tests/test_prpo_update.py).
        seed: Seed of the rollout RNG.
        val_generation: Decoding of the validation loop.
        log_trees: Rollout trees logged as text every this many steps (0: never).
    """

    def __init__(
        self,
        policy: Callable,
        optimizer: Callable,
        scheduler: Callable | None = None,
        rollout: dict | None = None,
        reward: dict | None = None,
        init_from: str | None = None,
        cold_start: bool = True,
        eps_low: float = 0.2,
        eps_high: float = 0.28,
        kl_coef: float = 0.0,
        epochs: int = 1,
        micro_batch_size: int = 16,
        use_liger: bool = True,
        liger_chunk_size: int = 1,
        skip_zero_advantage: bool = True,
        overlong_filter: bool = True,
        shared_prefix_update: bool = True,
        seed: int = 0,
        val_generation: dict | None = None,
        val_text_samples: int = 4,
        log_trees: int = 25,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.policy_factory = policy
        self.policy = None
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.rollout_cfg = RolloutConfig(**(rollout or {}))
        self.reward_cfg = RewardConfig(**(reward or {}))
        self.init_from = init_from
        self.cold_start = cold_start
        self.eps_low, self.eps_high, self.kl_coef = eps_low, eps_high, kl_coef
        self.epochs = epochs
        self.micro_batch_size = micro_batch_size
        self.use_liger = use_liger
        self.liger_chunk_size = liger_chunk_size
        self.skip_zero_advantage = skip_zero_advantage
        self.overlong_filter = overlong_filter
        self.shared_prefix_update = shared_prefix_update
        self.seed = seed
        self.validation = LoopValidation(GenerationConfig(**(val_generation or {})), val_text_samples)
        self.log_trees = log_trees
        self._generator: torch.Generator | None = None

    def _policy_source(self) -> dict:
        """The factory's arguments: the SFT checkpoint (``cold_start``), or the model as configured."""
        return {"path": self.init_from} if self.cold_start and self.init_from else {}

    @property
    def ref_policy(self) -> nn.Module | None:
        """The frozen KL reference (``kl_coef > 0``), built from ``init_from`` like the policy.

        Deliberately not a registered submodule: its weights stay out of ``state_dict`` and so out of
        every Lightning checkpoint (a resumed run rebuilds it from ``init_from``, which never changes),
        DDP neither wraps nor broadcasts it, and ``train()`` never switches it out of eval mode.
        """
        return self.__dict__.get("_ref_policy")

    def configure_model(self) -> None:
        if self.policy is None:
            self.policy = configure_policy(self, self.policy_factory, **self._policy_source()).train()
        if self.kl_coef and self.ref_policy is None:
            ref = configure_policy(self, self.policy_factory, **self._policy_source())
            ref = ref.eval().requires_grad_(False)
            self.__dict__["_ref_policy"] = ref

    def on_fit_start(self) -> None:
        # the strategy moved the registered modules to the device; the reference is not one of them
        # (a sharded one already lives on its mesh's device)
        if self.ref_policy is not None and not is_sharded(self.ref_policy):
            self.ref_policy.to(self.device)

    # ---- rollout -------------------------------------------------------------------------------
    def rollout(self, batch: list[VideoQA]):
        if self._generator is None:
            rank = self.global_rank
            self._generator = torch.Generator(device="cpu").manual_seed(self.seed * 1000 + rank)
        was_training = self.policy.training
        self.policy.eval()
        try:
            with gathered_for_generation(self.policy):
                return prpo_rollout(
                    self.policy,
                    batch,
                    self.rollout_cfg,
                    self.reward_cfg,
                    generator=self._generator,
                    train_step=self.global_step,
                )
        finally:
            self.policy.train(was_training)

    # ---- exact resume (videomem.train.resume) ---------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # the rollout generator (sampling and PSP selection) of every rank; None before the first rollout
        state = self._generator.get_state() if self._generator is not None else None
        checkpoint["rollout_generator"] = gather_per_rank(state)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = this_rank(checkpoint.get("rollout_generator", []), self.global_rank)
        if state is not None:
            self._generator = torch.Generator(device="cpu")
            self._generator.set_state(state)

    # ---- update --------------------------------------------------------------------------------
    def _micro_loss(
        self,
        samples: list[RolloutSample],
        num_tokens: float,
        weight: float,
        old_logprobs: torch.Tensor | None = None,
        keep_logprobs: bool = False,
    ) -> tuple[torch.Tensor, dict]:
        """Clipped-surrogate loss of one micro-batch.

        ``old_logprobs`` [B, L] are log pi_old of the targets (None: on-policy, ratio 1, the first pass
        over a rollout). ``keep_logprobs`` also returns the current ones, detached, in
        ``stats["logprobs"]``: the old log-probs of the later epochs over the same micro-batch.
        """
        if self.shared_prefix_update:  # each prompt once, its sampled completions packed after it
            groups = prompt_groups(samples)
            samples = [s for g in groups for s in g]  # row order of group_hidden_states
            args = (
                [g[0].messages for g in groups],
                [g[0].video for g in groups],
                [[trained_completion(s) for s in g] for g in groups],
            )
            hidden, targets, mask = self.policy.group_hidden_states(*args)  # [N, C, H], [N, C], [N, C]
            ref_hidden = lambda: self.ref_policy.group_hidden_states(*args)[0]  # noqa: E731
        else:  # one full prompt + completion row per sample
            inputs = self.policy.build_inputs(
                [s.messages for s in samples],
                [s.video for s in samples],
                completions=[trained_completion(s) for s in samples],
            ).to(self.device)
            hidden = self.policy.hidden_states(inputs)[:, :-1]  # [B, L-1, H] predicts tokens 1..L-1
            targets = inputs.input_ids[:, 1:]  # [B, L-1]
            mask = (inputs.labels[:, 1:] != -100).float()  # [B, L-1]
            ref_hidden = lambda: self.ref_policy.hidden_states(inputs)[:, :-1]  # noqa: E731
        adv = torch.tensor([s.advantage for s in samples], dtype=hidden.dtype, device=self.device)  # [B]
        ref = None
        if self.kl_coef:
            with torch.no_grad():
                # the forward first: under FSDP2 it gathers the root group, and only then is
                # lm_head_weight the full [V, H] tensor (read before, it is this rank's DTensor shard)
                h_ref = ref_hidden()  # [B, L-1, H]
                w, t = self.ref_policy.lm_head_weight, self.rollout_cfg.temperature
                ref = chunked_token_logprobs(h_ref, w, targets, t)  # [B, L-1], no [B, L, V] fp32
                reshard(self.ref_policy)  # no backward reshards the frozen root: free its gathered weights
        stats_extra = {}
        if keep_logprobs:
            with torch.no_grad():  # row by row: no [B, L, V] logits for the whole micro-batch
                w = self.policy.lm_head_weight
                t = self.rollout_cfg.temperature
                rows = [token_logprobs(h @ w.T, y, t) for h, y in zip(hidden.detach(), targets)]
                stats_extra["logprobs"] = torch.stack(rows)  # [B, L]
        kwargs = dict(
            old_logprobs=old_logprobs,
            ref_logprobs=ref,
            eps_low=self.eps_low,
            eps_high=self.eps_high,
            kl_coef=self.kl_coef,
            temperature=self.rollout_cfg.temperature,
            num_tokens=num_tokens,
        )
        if self.use_liger:
            loss, stats = fused_grpo_loss(
                hidden,
                self.policy.lm_head_weight,
                targets,
                mask,
                adv,
                chunk_size=self.liger_chunk_size,
                **kwargs,
            )
        else:
            loss, stats = naive_grpo_loss(hidden, self.policy.lm_head_weight, targets, mask, adv, **kwargs)
        return loss * weight, {**stats, **stats_extra}

    def training_step(self, batch: list[VideoQA], batch_idx: int) -> None:
        opt = self.optimizers()
        sched = self.lr_schedulers()
        t0 = time.perf_counter()
        rollout = self.rollout(batch)
        t_rollout = time.perf_counter() - t0

        samples = ended_samples(rollout.samples, self.overlong_filter)
        tokens = [  # response tokens + <|im_end|>, the global token-mean's normaliser
            (
                len(s.completion_ids)
                if s.completion_ids is not None
                else self.policy.count_tokens(s.completion)
            )
            + 1
            for s in samples
        ]
        _, world = rank_and_world()
        stats_t = torch.tensor([float(sum(tokens)), 0.0], device=self.device)
        samples = update_samples(samples, self.skip_zero_advantage)
        chunks = micro_batches(samples, self.micro_batch_size, whole_groups=self.shared_prefix_update)
        stats_t[1] = len(chunks)
        if world > 1:  # global token count and equal micro-batch counts, once per step (not per call)
            sums = stats_t[:1].clone()
            dist.all_reduce(sums)
            maxes = stats_t[1:].clone()
            dist.all_reduce(maxes, op=dist.ReduceOp.MAX)
            stats_t = torch.cat([sums, maxes])
        num_tokens, n_chunks = float(stats_t[0]), int(stats_t[1])

        t1 = time.perf_counter()
        loss_sum, clip_sum, kl_sum = 0.0, 0.0, 0.0
        old: dict[int, torch.Tensor] = {}  # log pi_old per micro-batch, from the first pass (epochs > 1)
        for epoch in range(self.epochs):
            for c in range(n_chunks):
                real = c < len(chunks)
                micro = chunks[c] if real else rollout.samples[:1]  # zero-weight padding under DDP
                if not micro:
                    continue
                loss, stats = self._micro_loss(
                    micro,
                    num_tokens,
                    weight=float(world) if real else 0.0,
                    old_logprobs=old.get(c),
                    keep_logprobs=self.epochs > 1 and epoch == 0,
                )
                if "logprobs" in stats:
                    old[c] = stats.pop("logprobs")
                # gradients reduced over ranks once per optimizer step: in the last micro-batch's backward
                with backward_sync(self, enabled=c == n_chunks - 1):
                    self.manual_backward(loss)
                loss_sum += float(loss.detach()) / world
                if real:  # padding micro-batches count in no statistic
                    clip_sum += float(stats["clip_fraction"]) * len(micro)
                    kl_sum += float(stats.get("kl", torch.tensor(0.0))) * len(micro)
            self.clip_gradients(opt, gradient_clip_val=1.0, gradient_clip_algorithm="norm")
            opt.step()
            opt.zero_grad(set_to_none=True)
        if sched is not None:
            sched.step()
        t_update = time.perf_counter() - t1

        n_upd = float(sum(len(c) for c in chunks))
        metrics = prpo_step_metrics(  # the whole batch over all ranks: sums and counts, not rank 0's share
            rollout,
            sums={"train/loss": loss_sum, "train/update_samples": n_upd},
            means={
                "train/clip_fraction": (clip_sum, n_upd * self.epochs),
                "train/kl": (kl_sum, n_upd * self.epochs),
            },
            maxes={"time/rollout_s": t_rollout, "time/update_s": t_update},
            device=self.device,
        )
        metrics["train/response_tokens"] = num_tokens  # already the global count
        self.log_dict(metrics, batch_size=len(batch))
        self.log("reward", metrics.get("rollout/reward/total", 0.0), prog_bar=True, logger=False)
        if self.log_trees and batch_idx % self.log_trees == 0:
            experiment = getattr(self.logger, "experiment", None)
            if hasattr(experiment, "add_text"):
                text = rollout.tree.to_text()
                experiment.add_text("rollout/tree", f"```\n{text[:20000]}\n```", self.global_step)

    # ---- validation ----------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self.validation.epoch_start(self)

    def validation_step(self, batch: list[VideoQA], batch_idx: int) -> None:
        self.validation.step(self, batch)

    def on_validation_epoch_end(self) -> None:
        self.validation.epoch_end(self, prefix="val")

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=_trainable_parameters(self.policy))
        if self.scheduler_factory is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer=optimizer)},
        }


def _trainable_parameters(policy: nn.Module) -> list[nn.Parameter]:
    """Trainable parameters, the vision tower's (``visual`` in the name) last: the order the optimiser
    and the gradient-norm clipping (a sum over parameters, so order-sensitive in floating point) have
    always seen."""
    rest, vision = [], []
    for name, p in policy.named_parameters():
        if p.requires_grad:
            (vision if ".visual." in f".{name}." else rest).append(p)
    return rest + vision
