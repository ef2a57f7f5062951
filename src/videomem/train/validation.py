"""Validation with the real sequential memory loop, shared by the SFT and PRPO modules.

Runs ``run_memory_loop`` greedy on validation questions, accumulates ``MemoryQAMetrics`` and logs
``val/accuracy``, ``val/seg_accuracy/clip_t``, per-category accuracy, format and parse rates, memory
length, plus a few questions' memory chains as TensorBoard text. With a sharded (FSDP2) policy the
weights are gathered once at epoch start and resharded at epoch end (``gathered_for_generation``):
ranks may hold different numbers of validation questions, so nothing may all-gather per step. Every
rank runs the same number of validation steps all the same (the datamodule pads each rank's share
with ``None``, skipped here), because under DDP each step passes the wrapper's forward, a collective.
"""

from __future__ import annotations

import contextlib

import torch
import torch.distributed as dist
from lightning import LightningModule

from videomem.data.distributed import rank_and_world
from videomem.data.types import VideoQA
from videomem.eval.evaluate import result_text
from videomem.eval.metrics import MemoryQAMetrics, flatten_metrics, update_metrics
from videomem.memory.loop import GenerationConfig, run_memory_loop
from videomem.train.parallel import gathered_for_generation


def _agreed_num_clips(metrics: MemoryQAMetrics | None, device) -> int:
    """T of this epoch's metrics, the same on every rank (0: no rank saw a question).

    Ranks may hold different numbers of validation questions, some none (a 2-question val set on 2
    ranks can put both on rank 0); every rank must then still enter torchmetrics' sync, or the ranks
    that did see questions wait forever.
    """
    t = torch.tensor([metrics.num_clips if metrics is not None else 0], device=device)
    if rank_and_world()[1] > 1:
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


class LoopValidation:
    """Stateful helper: one metric object per validation epoch, text samples to TensorBoard."""

    def __init__(self, gen: GenerationConfig, text_samples: int = 4) -> None:
        self.gen = gen
        self.text_samples = text_samples
        self.metrics: MemoryQAMetrics | None = None
        self.samples: list[str] = []
        self._gathered = contextlib.ExitStack()

    def epoch_start(self, module: LightningModule) -> None:
        """Gather a sharded policy's weights for the epoch (every rank, once); a no-op otherwise."""
        self._gathered.close()
        self._gathered.enter_context(gathered_for_generation(module.policy))

    def step(self, module: LightningModule, batch: list[VideoQA | None]) -> None:
        batch = [qa for qa in batch if qa is not None]  # None: padding, so all ranks run as many steps
        if not batch:
            return
        results = run_memory_loop(module.policy, batch, self.gen)
        if self.metrics is None:
            self.metrics = MemoryQAMetrics(num_clips=max(qa.num_clips for qa in batch)).to(module.device)
        update_metrics(self.metrics, results)
        room = self.text_samples - len(self.samples)
        self.samples.extend(result_text(r) for r in results[: max(room, 0)])

    def epoch_end(self, module: LightningModule, prefix: str = "val") -> dict | None:
        self._gathered.close()
        num_clips = _agreed_num_clips(self.metrics, module.device)
        if num_clips == 0:
            return None
        if self.metrics is None:  # no question on this rank: it must still join the metric sync
            self.metrics = MemoryQAMetrics(num_clips=num_clips).to(module.device)
        values = self.metrics.compute()
        n = int(values.pop("n"))
        for name, value in flatten_metrics(values, prefix).items():
            module.log(
                name, value, prog_bar=name == f"{prefix}/accuracy", batch_size=max(n, 1), sync_dist=False
            )
        experiment = getattr(module.logger, "experiment", None)
        if self.samples and hasattr(experiment, "add_text"):
            experiment.add_text(f"{prefix}/memories", "\n\n".join(self.samples), module.global_step)
        self.metrics, self.samples = None, []
        return values
