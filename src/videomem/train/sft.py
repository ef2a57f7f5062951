"""Cold start (method.md section 2): supervised fine-tuning on chain-of-memory data.

One training instance is one clip step t of one question: the prompt shows the teacher memory
M_{t-1} (M_0 empty) and the frames of clip t; the target is ``<memory>M_t</memory><answer>a</answer>``
with the gold letter, or an open-ended question's reference answer, at every step, also before the
evidence has appeared (DECISION, method.md section 2). The loss covers assistant tokens only (the policy's
labels mask the prompt). Validation runs the real sequential loop, greedy, on a few videos.
With Liger's kernels on (``Policy.liger_kernels``, CUDA only) the loss is Liger's fused linear
cross-entropy on the final hidden states: the ``[N, L, V]`` logits are never materialised.
Under Lightning's ModelParallelStrategy the policy is sharded with FSDP2 in ``configure_model``
(``videomem.train.parallel``) and validation decodes with the weights gathered once per epoch.

What it does not do: build shards or teacher memories (``videomem.data``), or decide the loop
(``videomem.memory.loop``).
"""

from __future__ import annotations

import random
from collections.abc import Callable

import torch
from lightning import LightningModule

from videomem.data.types import VideoQA
from videomem.memory.loop import GenerationConfig, step_messages
from videomem.memory.prompt import format_target
from videomem.model.policy import Policy, PolicyInputs
from videomem.train.parallel import configure_policy
from videomem.train.rank_metrics import reduce_over_ranks
from videomem.train.resume import gather_per_rank, this_rank
from videomem.train.validation import LoopValidation


def sft_steps(
    qa: VideoQA,
    steps_per_question: int | None = None,
    rng: random.Random | None = None,
    system_prompt: str | None = None,
):
    """The SFT instances of one question: ``(messages, frames, target)`` per clip step.

    Args:
        qa: A question whose ``memories`` holds the teacher chain M_1..M_T.
        steps_per_question: Keep this many random steps (None: all T).
        rng: RNG for that choice.
        system_prompt: The policy's instruction (None: default, "": none).

    Raises:
        ValueError: If the question has no teacher memories.
    """
    if not qa.memories or len(qa.memories) != qa.num_clips:
        raise ValueError(f"question {qa.qid} of {qa.video_id} has no chain of memories for SFT")
    if qa.answer is None:
        raise ValueError(
            f"question {qa.qid} of {qa.video_id} has no gold answer (letter or reference) for SFT"
        )
    steps = list(range(qa.num_clips))
    if steps_per_question is not None and steps_per_question < qa.num_clips:
        steps = sorted((rng or random).sample(steps, steps_per_question))
    out = []
    for t in steps:
        prev = qa.memories[t - 1] if t > 0 else ""
        out.append(
            (step_messages(qa, t, prev, system_prompt), qa.clips[t], format_target(qa.memories[t], qa.answer))
        )
    return out


def sft_loss(policy: Policy, inputs: PolicyInputs) -> torch.Tensor:
    """Mean cross-entropy over label tokens: HF's own loss, or Liger's fused one when the policy has Liger on.

    Both predict token ``i + 1`` from position ``i`` and ignore ``-100`` labels, so they agree.
    """
    if not policy.liger_kernels:
        return policy(inputs).loss  # through __call__: FSDP2 hooks the root forward
    from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

    hidden = policy.hidden_states(inputs)[:, :-1]  # [B, L-1, H] predicts tokens 1..L-1
    labels = inputs.labels[:, 1:]  # [B, L-1]
    flat = hidden.reshape(-1, hidden.shape[-1])  # [B*(L-1), H]
    return LigerFusedLinearCrossEntropyLoss()(policy.lm_head_weight, flat, labels.reshape(-1))


class SFTModule(LightningModule):
    """Chain-of-memory SFT of a Qwen-VL policy.

    Args:
        policy: Factory returning a ``Policy`` (built in ``configure_model`` so FSDP can shard it).
        optimizer: Partial optimizer taking the parameters.
        scheduler: Partial LR scheduler taking the optimizer, stepped every optimizer step, or None.
        steps_per_question: Clip steps per question in a batch (None: all T).
        val_generation: Decoding settings of the validation loop.
        val_text_samples: Number of validation questions whose memories go to TensorBoard as text.
    """

    def __init__(
        self,
        policy: Callable[[], torch.nn.Module],
        optimizer: Callable,
        scheduler: Callable | None = None,
        steps_per_question: int | None = None,
        val_generation: dict | None = None,
        val_text_samples: int = 4,
    ) -> None:
        super().__init__()
        self.policy_factory = policy
        self.policy = None
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.steps_per_question = steps_per_question
        self.validation = LoopValidation(GenerationConfig(**(val_generation or {})), val_text_samples)
        self._rng = random.Random(0)

    def configure_model(self) -> None:
        if self.policy is None:
            self.policy = configure_policy(self, self.policy_factory).train()

    def training_step(self, batch: list[VideoQA], batch_idx: int) -> torch.Tensor:
        system = self.policy.system_prompt
        steps = [s for qa in batch for s in sft_steps(qa, self.steps_per_question, self._rng, system)]
        messages, videos, targets = map(list, zip(*steps))
        inputs = self.policy.build_inputs(messages, videos, completions=targets).to(self.device)
        loss = sft_loss(self.policy, inputs)
        n_target = float((inputs.labels != -100).sum())
        n_tokens = float(inputs.attention_mask.sum())
        metrics = reduce_over_ranks(  # over every rank's batch: token-weighted, not a mean of rank means
            sums={"train/target_tokens": n_target},
            means={
                "train/loss": (float(loss.detach()) * n_target, n_target),
                "train/prompt_tokens": (n_tokens, float(len(steps))),
            },
            device=self.device,
        )
        self.log("train/loss", metrics.pop("train/loss"), prog_bar=True, batch_size=len(steps))
        self.log_dict(metrics, batch_size=len(steps))
        return loss

    def on_validation_epoch_start(self) -> None:
        self.validation.epoch_start(self)

    def validation_step(self, batch: list[VideoQA], batch_idx: int) -> None:
        self.validation.step(self, batch)

    def on_validation_epoch_end(self) -> None:
        self.validation.epoch_end(self, prefix="val")

    # ---- exact resume (videomem.train.resume) ---------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["sft_step_rng"] = gather_per_rank(self._rng.getstate())  # steps_per_question's draws

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = this_rank(checkpoint.get("sft_step_rng", []), self.global_rank)
        if state is not None:
            version, internal, gauss = state
            self._rng.setstate((version, tuple(internal), gauss))

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=[p for p in self.parameters() if p.requires_grad])
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
