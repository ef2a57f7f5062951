"""Temporal Cascading Reward (TCR, method.md section 3, Eq. 1) as plain reward functions.

    R_i = alpha_t * score(answer_i, a) + w_fmt * 1[format_i ok] - beta * max(0, len_tokens(memory_i) - L_max)

The answer term depends on the question's kind (``num_options``; 0 is open-ended): 1[letter == gold]
for multiple-choice, the rule score (``videomem.memory.scoring``, the ROUGE mean against the reference)
for open-ended, or, when a ``judge`` column is given, the LLM judge's verdict with the rule score
standing in wherever the judge fails (``videomem.rl.judge``).

``RewardConfig`` holds the TCR settings of a PRPO run (its defaults are ``DEFAULT_WEIGHTS``). Every reward term is a plain function ``(completions, answers, **columns) -> list[float]`` (the TRL /
open-r1 convention), mapped from its config name through the one dict ``REWARD_FUNCS``. Penalty terms
return POSITIVE values and are subtracted (``PENALTY_TERMS``), so logged components read naturally.
Columns are per-completion lists (``memory_tokens``) or scalars that apply to all (``num_options``,
``max_memory_tokens``, ``question``, ``judge``).

Parsing goes through ``videomem.memory.prompt.parse_output``, the same function the evaluator uses.
This module does not tokenise: memory lengths in policy tokens come from the caller
(``memory_tokens``), which holds the tokenizer. Clip indices are 0-based (``t = clip_index + 1`` in the
paper's notation).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from videomem.memory.prompt import parse_output
from videomem.memory.scoring import answer_score

if TYPE_CHECKING:  # the judge module pulls in the HTTP client; only its users import it
    from videomem.rl.judge import Judge

RewardFunc = Callable[..., list[float]]

#: Paper defaults (method.md section 3): alpha = 1.0, format weight 1.0, beta = 0.005, L_max = 1024.
DEFAULT_WEIGHTS: dict[str, float] = {"answer": 1.0, "format": 1.0, "memory_length": 0.005}
DEFAULT_MAX_MEMORY_TOKENS = 1024


def _per_item(value: Any, n: int, name: str) -> list[Any]:
    """A column as a list of length ``n``: lists are checked, scalars are broadcast."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != n:
            raise ValueError(f"column {name!r} has {len(value)} entries for {n} completions")
        return list(value)
    return [value] * n


def _parse_all(completions: list[str], num_options: int | Sequence[int]) -> list:
    options = _per_item(num_options, len(completions), "num_options")
    return [parse_output(text, n) for text, n in zip(completions, options)]


def answer_reward(
    completions: list[str],
    answers: list[str],
    *,
    num_options: int | Sequence[int] = 4,
    answer_texts: Sequence[str | None] | None = None,
    question: str | Sequence[str] = "",
    judge: Judge | None = None,
    **_: Any,
) -> list[float]:
    """What each parsed ``<answer>`` is worth in [0, 1] (``memory.scoring.answer_score``; unparsable: 0).

    Args:
        completions: Decoded outputs, one per sample.
        answers: Gold letters or, for open-ended questions, reference texts, one per sample.
        num_options: Options per question (scalar or per sample); letters beyond it are invalid; 0 marks
            an open-ended question (free-text answer, rule score or judge).
        answer_texts: The outputs whose ``<answer>`` is scored, one per sample (None scores 0);
            default: the completions themselves (the paper). ``RewardConfig.answer_target=continuation``
            passes the last output of the loop continued from each sample's memory.
        question: The question text (scalar or per sample): what the judge is shown.
        judge: Scores parsable open-ended answers instead of the rule (the rule stands in where it
            fails); None: the rule alone.
    """
    scored = completions if answer_texts is None else [t or "" for t in answer_texts]
    golds = _per_item(answers, len(completions), "answers")
    if len(scored) != len(completions):
        raise ValueError(f"{len(scored)} answer_texts for {len(completions)} completions")
    options = _per_item(num_options, len(completions), "num_options")
    parsed = [parse_output(text, n) for text, n in zip(scored, options)]
    values = [answer_score(p.answer, gold, n) for p, gold, n in zip(parsed, golds, options)]
    ask = [i for i, (p, g, n) in enumerate(zip(parsed, golds, options)) if n == 0 and p.answer and g]
    if judge is not None and ask:
        questions = _per_item(question, len(completions), "question")
        verdicts = judge.score(
            [(questions[i], golds[i], parsed[i].answer) for i in ask], [values[i] for i in ask]
        )
        for i, v in zip(ask, verdicts):
            values[i] = v
    return values


def format_reward(
    completions: list[str], answers: list[str], *, num_options: int | Sequence[int] = 4, **_: Any
) -> list[float]:
    """1 if the output is exactly one memory block followed by one answer block (``format_ok``), else 0."""
    return [float(p.format_ok) for p in _parse_all(completions, num_options)]


def memory_length_penalty(
    completions: list[str],
    answers: list[str],
    *,
    memory_tokens: Sequence[int],
    max_memory_tokens: int = DEFAULT_MAX_MEMORY_TOKENS,
    num_options: int | Sequence[int] = 4,
    **_: Any,
) -> list[float]:
    """POSITIVE penalty ``max(0, memory_tokens - L_max)``; 0 when the output has no parsable memory.

    Args:
        completions: Decoded outputs.
        answers: Gold letters (unused; kept for the common signature).
        memory_tokens: Length of each output's memory in policy-tokenizer tokens (computed by the caller).
        max_memory_tokens: L_max, the free memory budget in tokens.
        num_options: Options per question, for parsing.
    """
    lengths = _per_item(memory_tokens, len(completions), "memory_tokens")
    parsed = _parse_all(completions, num_options)
    return [
        0.0 if p.memory is None else float(max(0, int(n) - max_memory_tokens))
        for p, n in zip(parsed, lengths)
    ]


#: Config name -> reward term. The one registry of this module.
REWARD_FUNCS: dict[str, RewardFunc] = {
    "answer": answer_reward,
    "format": format_reward,
    "memory_length": memory_length_penalty,
}
#: Terms whose (positive) value is subtracted: R = sum_k sign_k * w_k * term_k.
PENALTY_TERMS: frozenset[str] = frozenset({"memory_length"})


def answer_weight(alpha: float, clip_index: int, num_clips: int, schedule: str = "constant") -> float:
    """alpha_t: the answer weight at clip ``clip_index`` (0-based) of ``num_clips``.

    ``constant`` is the paper (alpha at every step); ``linear`` is alpha * t / T with t = clip_index + 1,
    so later (better informed) answers weigh more and the last step gets the full alpha.
    """
    if schedule == "constant":
        return alpha
    if schedule == "linear":
        return alpha * (clip_index + 1) / num_clips
    raise ValueError(f"unknown answer_weight_schedule {schedule!r} (constant | linear)")


def compute_rewards(
    completions: list[str],
    answers: list[str],
    *,
    weights: dict[str, float],
    clip_index: int,
    num_clips: int,
    tcr: bool = True,
    answer_weight_schedule: str = "constant",
    **columns: Any,
) -> tuple[list[float], dict[str, list[float]]]:
    """TCR total reward of each completion of one clip step (Eq. 1) and its unweighted components.

    Args:
        completions: Decoded outputs of this step.
        answers: Gold letters, one per completion.
        weights: Term name (key of ``REWARD_FUNCS``) -> weight; only named terms are computed.
            Penalties take a positive weight (beta) and are subtracted. ``memory_penalty=false`` is
            ``memory_length: 0``.
        clip_index: 0-based index of this clip step.
        num_clips: T, the number of clips.
        tcr: False gives the terminal-reward ablation: every step before the last gets total 0
            (hence zero advantage); the components are still returned for logging.
        answer_weight_schedule: ``constant`` (paper) or ``linear`` (see ``answer_weight``).
        **columns: Passed to every term (``memory_tokens``, ``max_memory_tokens``, ``num_options``,
            ``question``, ``judge``).

    Returns:
        ``(totals, components)``: totals[i] is R_i; components[name][i] is the raw term value.
    """
    unknown = set(weights) - set(REWARD_FUNCS)
    if unknown:
        raise KeyError(f"unknown reward terms {sorted(unknown)}; known: {sorted(REWARD_FUNCS)}")
    if not 0 <= clip_index < num_clips:
        raise ValueError(f"clip_index {clip_index} outside [0, {num_clips})")
    components = {name: REWARD_FUNCS[name](completions, answers, **columns) for name in weights}
    totals = [0.0] * len(completions)
    if tcr or clip_index == num_clips - 1:
        for name, values in components.items():
            w = weights[name]
            if name == "answer":
                w = answer_weight(w, clip_index, num_clips, answer_weight_schedule)
            sign = -1.0 if name in PENALTY_TERMS else 1.0
            totals = [total + sign * w * v for total, v in zip(totals, values)]
    return totals, components


@dataclass
class RewardConfig:
    """TCR (Eq. 1): R = alpha_t * answer + w_format * format - beta * max(0, mem_tokens - L_max)."""

    alpha: float = DEFAULT_WEIGHTS["answer"]
    format_weight: float = DEFAULT_WEIGHTS["format"]
    beta: float = DEFAULT_WEIGHTS["memory_length"]
    max_memory_tokens: int = DEFAULT_MAX_MEMORY_TOKENS  # L_max
    tcr: bool = True  # False: terminal reward only
    memory_penalty: bool = True  # False: beta = 0 ("w/o MP")
    answer_weight_schedule: str = "constant"  # or "linear" (alpha * t / T)
    scale_advantages: bool = True  # z-score within the group (paper); False: mean-centred (Dr. GRPO)
    # Whose <answer> the answer term scores at a clip before the last. "provisional" (paper): the
    # sample's own a_t against the final gold. "continuation" (beyond the paper): the final a_T of the
    # loop continued greedily from the sample's memory M_t to the last clip, so a memory is paid for
    # the answer it leads to rather than for an early guess (docs/notes/prpo_tuning.md, "Scoring a memory by where it leads").
    answer_target: str = "provisional"
    # Open-ended answers: None scores them by the rule (ROUGE mean); a ``videomem.rl.judge.Judge`` asks an
    # LLM judge instead (``judge=openai``), the rule standing in where it fails.
    judge: Judge | None = None

    def __post_init__(self) -> None:
        if self.answer_target not in ("provisional", "continuation"):
            raise ValueError(
                f"answer_target must be 'provisional' or 'continuation', got {self.answer_target!r}"
            )

    def weights(self) -> dict[str, float]:
        """The ``weights`` argument of ``compute_rewards`` (``memory_penalty=False`` -> beta = 0)."""
        return {
            "answer": self.alpha,
            "format": self.format_weight,
            "memory_length": self.beta if self.memory_penalty else 0.0,
        }
