"""Evaluate a policy with the real sequential memory loop on shards (greedy by default).

Writes the figures of ``MemoryQAMetrics`` (accuracy of a_T, Seg1-N accuracy, per-category accuracy,
parse-failure and format-valid rates, memory length) plus every question's record, and records the
settings that decide whether two numbers can be compared (frames per clip, frame size, prompt).
``record`` and ``result_text`` render one question's loop as JSON and as Markdown (the latter is what
training's validation sends to TensorBoard).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator

from tqdm.auto import tqdm

from videomem.data.types import VideoQA
from videomem.eval.metrics import MemoryQAMetrics, update_metrics
from videomem.memory.loop import GenerationConfig, LoopResult, run_memory_loop


def batched(items: Iterable[VideoQA], size: int) -> Iterator[list[VideoQA]]:
    """Consecutive lists of ``size`` items (the last may be shorter)."""
    it = iter(items)
    while batch := list(itertools.islice(it, size)):
        yield batch


def record(result: LoopResult) -> dict:
    """One question's outcome as plain JSON."""
    qa = result.qa
    return {
        "video_id": qa.video_id,
        "qid": qa.qid,
        "category": qa.category,
        "categories": qa.categories or [qa.category],
        "answer": qa.answer,
        "pred": result.prediction,
        "step_answers": result.answers,
        "memories": [s.memory_out for s in result.steps],
        "format_ok": [s.parsed.format_ok for s in result.steps],
        "memory_tokens": [s.memory_tokens for s in result.steps],
        "last_output": result.steps[-1].output if result.steps else "",
        **{k: v for k, v in qa.meta.items() if isinstance(v, str | int | float | bool)},
    }


def result_text(result: LoopResult) -> str:
    """A question's memory chain as Markdown, for TensorBoard."""
    qa = result.qa
    lines = [f"**{qa.video_id} / {qa.qid}** ({qa.category}) {qa.question} gold={qa.answer}", ""]
    for t, s in enumerate(result.steps):
        lines.append(
            f"- clip {t + 1}: answer={s.parsed.answer} format_ok={s.parsed.format_ok} memory: `{s.memory_out}`"
        )
    return "\n".join(lines)


def evaluate(
    policy,
    questions: Iterable[VideoQA],
    *,
    batch_size: int = 16,
    gen: GenerationConfig | None = None,
    memory_off: bool = False,
    total: int | None = None,
    progress: bool = True,
) -> tuple[dict, list[dict]]:
    """Run the loop on every question and aggregate.

    Args:
        policy: The policy.
        questions: Questions with decoded clips (streamed).
        batch_size: Questions per batched loop.
        gen: Decoding settings (greedy if None).
        memory_off: Replace every carried memory by empty text (the memory-off control).
        total: Number of questions, for the progress bar.
        progress: Show a progress bar.

    Returns:
        ``(metrics, records)``: the metric dict and one JSON record per question.
    """
    metrics: MemoryQAMetrics | None = None
    records: list[dict] = []
    bar = tqdm(total=total, desc="eval", unit="q", disable=not progress)
    for batch in batched(questions, batch_size):
        results = run_memory_loop(policy, batch, gen, memory_off=memory_off)
        if metrics is None:
            metrics = MemoryQAMetrics(num_clips=max(qa.num_clips for qa in batch))
        update_metrics(metrics, results)
        records.extend(record(r) for r in results)
        bar.update(len(batch))
    bar.close()
    if metrics is None:
        raise ValueError("no questions to evaluate (empty shards?)")
    values = metrics.compute()
    values["n"] = int(values["n"])
    return values, records
