"""Running evaluation metrics of the clip-by-clip memory loop, as one torchmetrics ``Metric``.

Per question the loop gives T provisional answers a_1..a_T (method.md section 1); the prediction is
a_T. Each answer is worth ``memory.scoring.answer_score`` in [0, 1], the rule the rewards use: 1[a == gold]
for a multiple-choice question, the rule score (the ROUGE mean against the reference) for an open-ended
one. ``MemoryQAMetrics`` accumulates, with sum states that torchmetrics all-reduces under DDP:

- ``accuracy``: the mean score of a_T (on a multiple-choice set: the accuracy);
- ``seg_accuracy``: the same for a_t, t = 1..T ("Seg1-N accuracy", paper Table 4);
- ``per_category``: the same per category, a question counting in EACH of its categories (LVBench is
  multi-label);
- ``per_kind``: per kind present, ``mc`` the accuracy of the multiple-choice questions and ``open`` the
  mean rule score of the open-ended ones (``n_per_kind`` their counts); ``judge_records`` adds the LLM
  judge's ``open_judge`` at the end of an evaluation when a judge is configured;
- ``parse_failure_rate``: a_T unparsable (None);
- ``format_valid_rate`` and ``mean_memory_tokens``: over all steps of all questions;
- ``memory_match`` (only when questions carry teacher memories, as the synthetic shards do): per clip t,
  the fraction of those questions whose memory after step t equals the teacher's M_t (whitespace
  normalised). It tells memory-writing errors (perception, updates) from answering errors.

An unparsable answer is wrong, never replaced by a random option; a question without a gold letter or
reference (MLVU's unanswerable items) is always wrong. Benchmark-specific official aggregates (per duration, MLVU's
macro average, ...) are not computed here: see ``videomem.eval.benchmarks``.

``update_metrics`` feeds it the loop's ``LoopResult``s and ``flatten_metrics`` turns its figures into
the namespaced scalars that TensorBoard logs; evaluation and training's validation both use them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.distributed as dist
from torchmetrics import Metric

from videomem.data.types import KINDS, LETTERS, kind_of
from videomem.memory.loop import LoopResult
from videomem.memory.scoring import answer_score, rule_score


def _rate(num: torch.Tensor, den: torch.Tensor) -> float:
    """``num / den`` as a float, NaN when ``den`` is 0."""
    return num.item() / den.item() if den.item() > 0 else math.nan


class MemoryQAMetrics(Metric):
    """Accuracy of the final and provisional answers, per-category accuracy and output statistics.

    Args:
        num_clips: T, the number of clips (answers) per question; every update must give exactly T.
        categories: The categories to report, fixed up front: their counts are tensor sum states, so they
            synchronise under DDP like the rest; a question's categories outside this list are ignored.
            None: categories are discovered as they come (kept in a Python dict that ``compute`` merges
            across processes with ``all_gather_object``).
        **kwargs: Passed to ``torchmetrics.Metric``.

    Use ``update`` then ``compute``; ``forward`` only accumulates and returns None (per-batch values of a
    dict-valued metric are not useful here).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, num_clips: int, categories: list[str] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        if num_clips < 1:
            raise ValueError(f"num_clips must be >= 1, got {num_clips}")
        self.num_clips = num_clips
        self.categories = list(categories) if categories is not None else None
        long, real = torch.long, torch.float64  # scores are fractions for open-ended questions
        self.add_state("n", torch.tensor(0, dtype=long), dist_reduce_fx="sum")
        self.add_state("seg_score", torch.zeros(num_clips, dtype=real), dist_reduce_fx="sum")  # [T]
        self.add_state("kind_n", torch.zeros(len(KINDS), dtype=long), dist_reduce_fx="sum")  # [K]
        self.add_state("kind_score", torch.zeros(len(KINDS), dtype=real), dist_reduce_fx="sum")  # [K]
        self.add_state("parse_failures", torch.tensor(0, dtype=long), dist_reduce_fx="sum")
        self.add_state("steps", torch.tensor(0, dtype=long), dist_reduce_fx="sum")
        self.add_state("format_valid", torch.tensor(0, dtype=long), dist_reduce_fx="sum")
        self.add_state("memory_tokens", torch.tensor(0, dtype=long), dist_reduce_fx="sum")
        self.add_state("memory_match", torch.zeros(num_clips, dtype=long), dist_reduce_fx="sum")  # [T]
        self.add_state("memory_n", torch.tensor(0, dtype=long), dist_reduce_fx="sum")
        if self.categories is not None:
            c = len(self.categories)
            self.add_state("cat_score", torch.zeros(c, dtype=real), dist_reduce_fx="sum")  # [C]
            self.add_state("cat_total", torch.zeros(c, dtype=long), dist_reduce_fx="sum")  # [C]
        self._dynamic: dict[str, list[float]] = {}  # category -> [score sum, total], when categories is None

    def update(
        self,
        step_answers: Sequence[Sequence[str | None]],
        gold: Sequence[str | None],
        categories: Sequence[Sequence[str]],
        format_ok: Sequence[Sequence[bool]],
        memory_tokens: Sequence[Sequence[int]],
        memories: Sequence[Sequence[str]] | None = None,
        teacher_memories: Sequence[Sequence[str] | None] | None = None,
        num_options: Sequence[int] | None = None,
    ) -> None:
        """Add a batch of questions.

        Args:
            step_answers: Per question, the parsed answers a_1..a_T (None where unparsable).
            gold: Per question, the gold letter or reference text (None: unanswerable, always wrong).
            categories: Per question, all its categories.
            format_ok: Per question, the format flag of each of the T steps.
            memory_tokens: Per question, the memory length in tokens after each of the T steps.
            memories: Per question, the memory carried after each of the T steps (for ``memory_match``).
            teacher_memories: Per question, the teacher memories M_1..M_T, or None where it has none.
            num_options: Per question, its number of options (0: open-ended); None: all multiple-choice.

        Raises:
            ValueError: Lists of different lengths, or a question without exactly T steps.
        """
        b = len(step_answers)
        if not (len(gold) == len(categories) == len(format_ok) == len(memory_tokens) == b):
            raise ValueError(
                "step_answers, gold, categories, format_ok and memory_tokens must have one entry per question"
            )
        for per_step in (*step_answers, *format_ok, *memory_tokens):
            if len(per_step) != self.num_clips:
                raise ValueError(
                    f"every question needs exactly num_clips={self.num_clips} steps, got {len(per_step)}"
                )
        options = list(num_options) if num_options is not None else [len(LETTERS)] * b  # all letters
        if len(options) != b:
            raise ValueError(f"{len(options)} num_options for {b} questions")
        scores = torch.tensor(
            [[answer_score(a, g, k) for a in answers] for answers, g, k in zip(step_answers, gold, options)],
            dtype=torch.float64,
        ).reshape(b, self.num_clips)  # [B, T]
        device = self.seg_score.device
        self.n += b
        self.seg_score += scores.sum(0).to(device)  # [T]
        kinds = torch.tensor([KINDS.index(kind_of(k)) for k in options], dtype=torch.long)  # [B]
        self.kind_n += torch.bincount(kinds, minlength=len(KINDS)).to(device)  # [K]
        self.kind_score += (
            torch.zeros(len(KINDS), dtype=torch.float64).index_add_(0, kinds, scores[:, -1]).to(device)
        )
        self.parse_failures += sum(answers[-1] is None for answers in step_answers)
        self.steps += b * self.num_clips
        self.format_valid += sum(bool(f) for flags in format_ok for f in flags)
        self.memory_tokens += sum(int(m) for lengths in memory_tokens for m in lengths)
        if memories is not None and teacher_memories is not None:
            norm = " ".join
            for own, teacher in zip(memories, teacher_memories):
                if teacher is None or len(teacher) != self.num_clips:
                    continue
                self.memory_n += 1
                match = [norm(a.split()) == norm(b.split()) for a, b in zip(own, teacher)]
                self.memory_match += torch.tensor(match, dtype=torch.long, device=device)  # [T]
        final = scores[:, -1].tolist()  # [B]
        if self.categories is not None:
            index = {c: i for i, c in enumerate(self.categories)}
            correct = torch.zeros(len(self.categories), dtype=torch.float64)  # [C]
            total = torch.zeros(len(self.categories), dtype=torch.long)  # [C]
            for hit, cats in zip(final, categories):
                for c in set(cats) & index.keys():
                    total[index[c]] += 1
                    correct[index[c]] += hit
            self.cat_score += correct.to(device)
            self.cat_total += total.to(device)
        else:
            for hit, cats in zip(final, categories):
                for c in set(cats):
                    counts = self._dynamic.setdefault(c, [0, 0])
                    counts[0] += hit
                    counts[1] += 1

    def _dynamic_counts(self) -> dict[str, list[float]]:
        """The discovered categories' counts, summed over all processes when distributed (and synced on
        compute: ``make eval`` merges its shares itself, ``eval.evaluate.merge_shares``)."""
        if not (
            self.sync_on_compute
            and dist.is_available()
            and dist.is_initialized()
            and dist.get_world_size(self.process_group) > 1
        ):
            return self._dynamic
        gathered: list[dict[str, list[float]] | None] = [None] * dist.get_world_size(self.process_group)
        dist.all_gather_object(gathered, self._dynamic, group=self.process_group)
        merged: dict[str, list[float]] = {}
        for part in gathered:
            for c, (k, n) in (part or {}).items():
                counts = merged.setdefault(c, [0, 0])
                counts[0] += k
                counts[1] += n
        return merged

    def compute(self) -> dict:
        """The accumulated figures (see the module docstring); rates are NaN when nothing was counted.

        Returns:
            ``{"n", "accuracy", "seg_accuracy" (list of T), "per_category" ({category: score}, sorted
            by name when discovered), "per_kind" ({kind: score} for the kinds seen), "n_per_kind",
            "parse_failure_rate", "format_valid_rate", "mean_memory_tokens"}``, plus ``"memory_match"``
            (list of T) when some question had teacher memories.
        """
        seg = [_rate(k, self.n) for k in self.seg_score]
        if self.categories is not None:
            per_category = {
                c: _rate(k, t) for c, k, t in zip(self.categories, self.cat_score, self.cat_total)
            }
        else:
            counts = self._dynamic_counts()
            per_category = {c: counts[c][0] / counts[c][1] for c in sorted(counts)}
        return {
            "n": int(self.n.item()),
            "accuracy": seg[-1],
            "seg_accuracy": seg,
            "per_category": per_category,
            "per_kind": {k: _rate(v, n) for k, v, n in zip(KINDS, self.kind_score, self.kind_n) if n > 0},
            "n_per_kind": {k: int(n) for k, n in zip(KINDS, self.kind_n) if n > 0},
            "parse_failure_rate": _rate(self.parse_failures, self.n),
            "format_valid_rate": _rate(self.format_valid, self.steps),
            "mean_memory_tokens": _rate(self.memory_tokens, self.steps),
            **(
                {"memory_match": [_rate(k, self.memory_n) for k in self.memory_match]}
                if self.memory_n
                else {}
            ),
        }

    def forward(self, *args, **kwargs) -> None:
        """Accumulate like ``update`` (torchmetrics' per-batch forward would reset the discovered categories)."""
        self.update(*args, **kwargs)

    def reset(self) -> None:
        """Reset the tensor states and the discovered categories."""
        super().reset()
        self._dynamic = {}

    def merge_state(self, incoming_state: dict | Metric) -> None:
        """Add another instance's (or state dict's) counts, discovered categories included."""
        super().merge_state(incoming_state)
        if isinstance(incoming_state, MemoryQAMetrics):
            for c, (k, n) in incoming_state._dynamic.items():
                counts = self._dynamic.setdefault(c, [0, 0])
                counts[0] += k
                counts[1] += n


def update_metrics(metrics: MemoryQAMetrics, results: list[LoopResult]) -> None:
    """Feed a batch of loop results to the metric accumulator."""
    metrics.update(
        [r.answers for r in results],
        [r.qa.answer for r in results],
        [r.qa.categories or [r.qa.category] for r in results],
        [[s.parsed.format_ok for s in r.steps] for r in results],
        [[s.memory_tokens for s in r.steps] for r in results],
        memories=[[s.memory_out for s in r.steps] for r in results],
        teacher_memories=[r.qa.memories for r in results],
        num_options=[len(r.qa.options) for r in results],
    )


def judge_records(records: list[dict], judge) -> float:
    """Ask an LLM judge (``videomem.rl.judge.Judge``) about every open-ended record's final answer.

    Sets ``record["judge_score"]`` on each open-ended record (an unparsable answer or a missing reference
    scores 0 without a request; where the judge fails the rule score stands in, counted in the judge's
    stats) and returns their mean (NaN when there are none). Runs once on the final records (after a
    distributed evaluation merged them), so each answer costs one request at most.
    """
    todo = [r for r in records if r.get("kind") == "open"]
    asked = [r for r in todo if r["pred"] and r["answer"]]
    verdicts = judge.score(
        [(r["question"], r["answer"], r["pred"]) for r in asked],
        [rule_score(r["pred"], r["answer"]) for r in asked],
    )
    for r in todo:
        r["judge_score"] = 0.0
    for r, v in zip(asked, verdicts):
        r["judge_score"] = v
    return sum(r["judge_score"] for r in todo) / len(todo) if todo else math.nan


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
