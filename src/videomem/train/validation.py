"""Validation with the real sequential memory loop, shared by the SFT and PRPO modules.

Runs ``run_memory_loop`` greedy on validation questions, accumulates ``MemoryQAMetrics`` and logs
``val/accuracy``, ``val/seg_accuracy/clip_t``, per-category accuracy, format and parse rates, memory
length, plus a few questions' memory chains as TensorBoard text.
"""

from __future__ import annotations

from lightning import LightningModule

from videomem.data.types import VideoQA
from videomem.eval.metrics import MemoryQAMetrics
from videomem.memory.loop import GenerationConfig, LoopResult, run_memory_loop


def result_text(result: LoopResult) -> str:
    """A question's memory chain as Markdown, for TensorBoard."""
    qa = result.qa
    lines = [f"**{qa.video_id} / {qa.qid}** ({qa.category}) {qa.question} gold={qa.answer}", ""]
    for t, s in enumerate(result.steps):
        lines.append(f"- clip {t + 1}: answer={s.parsed.answer} format_ok={s.parsed.format_ok} memory: `{s.memory_out}`")
    return "\n".join(lines)


def update_metrics(metrics: MemoryQAMetrics, results: list[LoopResult]) -> None:
    """Feed a batch of loop results to the metric accumulator."""
    metrics.update(
        [r.answers for r in results],
        [r.qa.answer for r in results],
        [r.qa.categories or [r.qa.category] for r in results],
        [[s.parsed.format_ok for s in r.steps] for r in results],
        [[s.memory_tokens for s in r.steps] for r in results],
    )


def flatten_metrics(values: dict, prefix: str) -> dict[str, float]:
    """``{"accuracy": .7, "seg_accuracy": [..], "per_category": {..}}`` -> flat scalar names."""
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update({f"{prefix}/{key}/{k}": float(v) for k, v in value.items()})
        elif isinstance(value, list | tuple):
            flat.update({f"{prefix}/{key}/clip_{i + 1}": float(v) for i, v in enumerate(value)})
        else:
            flat[f"{prefix}/{key}"] = float(value)
    return flat


class LoopValidation:
    """Stateful helper: one metric object per validation epoch, text samples to TensorBoard."""

    def __init__(self, gen: GenerationConfig, text_samples: int = 4) -> None:
        self.gen = gen
        self.text_samples = text_samples
        self.metrics: MemoryQAMetrics | None = None
        self.samples: list[str] = []

    def step(self, module: LightningModule, batch: list[VideoQA]) -> None:
        results = run_memory_loop(module.policy, batch, self.gen)
        if self.metrics is None:
            self.metrics = MemoryQAMetrics(num_clips=max(qa.num_clips for qa in batch)).to(module.device)
        update_metrics(self.metrics, results)
        room = self.text_samples - len(self.samples)
        self.samples.extend(result_text(r) for r in results[: max(room, 0)])

    def epoch_end(self, module: LightningModule, prefix: str = "val") -> dict | None:
        if self.metrics is None:
            return None
        values = self.metrics.compute()
        n = int(values.pop("n"))
        for name, value in flatten_metrics(values, prefix).items():
            module.log(name, value, prog_bar=name == f"{prefix}/accuracy", batch_size=max(n, 1), sync_dist=False)
        experiment = getattr(module.logger, "experiment", None)
        if self.samples and hasattr(experiment, "add_text"):
            experiment.add_text(f"{prefix}/memories", "\n\n".join(self.samples), module.global_step)
        self.metrics, self.samples = None, []
        return values
