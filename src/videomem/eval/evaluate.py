"""Evaluate a policy with the real sequential memory loop on shards (greedy by default).

Writes the figures of ``MemoryQAMetrics`` (accuracy of a_T, Seg1-N accuracy, per-category accuracy,
parse-failure and format-valid rates, memory length) plus every question's record, and records the
settings that decide whether two numbers can be compared (frames per clip, frame size, prompt).
``record`` and ``result_text`` render one question's loop as JSON and as Markdown (the latter is what
training's validation sends to TensorBoard).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from videomem.data.types import VideoQA
from videomem.eval.metrics import MemoryQAMetrics, update_metrics
from videomem.memory.loop import GenerationConfig, LoopResult, run_memory_loop
from videomem.memory.scoring import answer_score


def batched(items: Iterable, size: int) -> Iterator[list]:
    """Consecutive lists of ``size`` items (the last may be shorter)."""
    it = iter(items)
    while batch := list(itertools.islice(it, size)):
        yield batch


def record(result: LoopResult) -> dict:
    """One question's outcome as plain JSON (``score``: what a_T is worth, ``memory.scoring.answer_score``)."""
    qa = result.qa
    step_scores = [answer_score(a, qa.answer, len(qa.options)) for a in result.answers]
    return {
        "video_id": qa.video_id,
        "qid": qa.qid,
        "kind": qa.kind,
        "question": qa.question,
        "options": list(qa.options),
        "category": qa.category,
        "categories": qa.categories or [qa.category],
        "answer": qa.answer,
        "pred": result.prediction,
        "score": step_scores[-1] if step_scores else 0.0,
        "step_answers": result.answers,
        "step_scores": step_scores,
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


@dataclass
class EvalShare:
    """One process's share of an evaluation, ready to be merged with the others' (``merge_shares``).

    Attributes:
        positions: Per record, its question's index in the whole split (the merge order).
        records: One JSON record per question evaluated here (``record``).
        metrics: The metric counts of these questions (CPU tensors); None when there were none.
    """

    positions: list[int] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)
    metrics: MemoryQAMetrics | None = None


def evaluate_batches(
    policy,
    batches: Iterable[tuple[list[int], list[VideoQA]]],
    *,
    gen: GenerationConfig | None = None,
    memory_off: bool = False,
    total: int | None = None,
    progress: bool = True,
) -> EvalShare:
    """Run the loop on every batch: ``(positions, questions)`` each; a process's share of an evaluation.

    Args:
        policy: The policy.
        batches: Questions with decoded clips, batched, each with its index in the whole split.
        gen: Decoding settings (greedy if None).
        memory_off: Replace every carried memory by empty text (the memory-off control).
        total: Number of questions, for the progress bar.
        progress: Show a progress bar.
    """
    share = EvalShare()
    bar = tqdm(total=total, desc="eval", unit="q", disable=not progress)
    for positions, batch in batches:
        results = run_memory_loop(policy, batch, gen, memory_off=memory_off)
        if share.metrics is None:
            # sync_on_compute=False: shares are merged explicitly (merge_shares), never all-reduced
            num_clips = max(qa.num_clips for qa in batch)
            share.metrics = MemoryQAMetrics(num_clips=num_clips, sync_on_compute=False)
        update_metrics(share.metrics, results)
        share.positions.extend(positions)
        share.records.extend(record(r) for r in results)
        bar.update(len(batch))
    bar.close()
    return share


def merge_shares(shares: Iterable[EvalShare]) -> tuple[dict, list[dict]]:
    """The metrics over all shares and every record in split order: what one process would have given.

    The metric states are integer counts, so their sum does not depend on how the questions were split.

    Raises:
        ValueError: No question at all, or shares of different clip counts T.
    """
    shares = list(shares)
    metrics = [s.metrics for s in shares if s.metrics is not None]
    if not metrics:
        raise ValueError("no questions to evaluate (empty shards?)")
    clips = sorted({m.num_clips for m in metrics})
    if len(clips) > 1:
        raise ValueError(
            f"every question needs the same number of clips, got T in {clips}: evaluate one T at a time"
        )
    merged = copy.deepcopy(metrics[0])
    for m in metrics[1:]:
        merged.merge_state(m)
    ordered = sorted(
        zip((p for s in shares for p in s.positions), (r for s in shares for r in s.records)),
        key=lambda pr: pr[0],
    )
    return merged.compute(), [r for _, r in ordered]


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
    """Run the loop on every question in one process and aggregate.

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
    indexed = batched(enumerate(questions), batch_size)
    batches = (([i for i, _ in b], [qa for _, qa in b]) for b in indexed)
    share = evaluate_batches(policy, batches, gen=gen, memory_off=memory_off, total=total, progress=progress)
    return merge_shares([share])
