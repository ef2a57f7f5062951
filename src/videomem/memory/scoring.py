"""What a parsed answer is worth, for both kinds of question: the one rule the rewards and the metrics share.

``parse_output`` (prompt.py) decides what an answer IS; ``answer_score`` decides what it is WORTH, in
[0, 1], so a reward during RL and a score at evaluation mean the same thing:

- multiple-choice: 1 if the letter equals the gold letter, else 0 (accuracy);
- open-ended: ``rule_score``, the ROUGE mean (method.md section 1.9): the mean of the ROUGE-1, ROUGE-2 and
  ROUGE-L F1 of the answer against the reference, over SQuAD-normalised words (lowercase, punctuation
  and the articles a / an / the dropped). ROUGE-2 is left out when the reference has fewer than two
  words, so a one-word reference is scored by token F1; an answer equal to the reference after
  normalisation scores 1.

An unparsable or over-long answer (None) and a question without a reference score 0, never a guess.
The LLM judge, which may replace the rule for open-ended answers, is ``videomem.rl.judge``.
"""

from __future__ import annotations

import re
import string
from collections import Counter

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans({c: " " for c in string.punctuation})


def normalize_words(text: str) -> list[str]:
    """SQuAD's normalisation, as words: lowercase, punctuation -> space, articles dropped."""
    return _ARTICLES.sub(" ", text.lower().translate(_PUNCT)).split()


def _f1(overlap: int, n_pred: int, n_ref: int) -> float:
    if overlap == 0:
        return 0.0
    precision, recall = overlap / n_pred, overlap / n_ref
    return 2 * precision * recall / (precision + recall)


def rouge_n(pred: list[str], ref: list[str], n: int) -> float:
    """ROUGE-N F1: clipped n-gram overlap of two word lists (0 when either has no n-gram)."""
    grams = lambda words: Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))  # noqa: E731
    p, r = grams(pred), grams(ref)
    return _f1(sum((p & r).values()), sum(p.values()), sum(r.values()))


def rouge_l(pred: list[str], ref: list[str]) -> float:
    """ROUGE-L F1: the longest common subsequence of two word lists, as precision and recall."""
    prev = [0] * (len(ref) + 1)
    for w in pred:  # one row of the LCS table at a time: O(len(pred) * len(ref)) time, O(len(ref)) memory
        row = [0]
        for j, v in enumerate(ref):
            row.append(prev[j] + 1 if w == v else max(prev[j + 1], row[j]))
        prev = row
    return _f1(prev[-1], len(pred), len(ref))


def rule_score(answer: str | None, reference: str | None) -> float:
    """The ROUGE mean of an open-ended answer against its reference (module docstring), in [0, 1]."""
    if answer is None or reference is None:
        return 0.0
    pred, ref = normalize_words(answer), normalize_words(reference)
    if pred == ref:
        return 1.0
    if not pred or not ref:
        return 0.0
    parts = [rouge_n(pred, ref, 1), rouge_l(pred, ref)]
    if len(ref) >= 2:
        parts.append(rouge_n(pred, ref, 2))
    return sum(parts) / len(parts)


def answer_score(answer: str | None, gold: str | None, num_options: int) -> float:
    """What a parsed answer is worth in [0, 1]: letter match (``num_options`` > 0) or ``rule_score`` (0).

    Args:
        answer: ``ParsedOutput.answer``: a letter, a free text, or None when unparsable.
        gold: The gold letter, the reference text, or None (unlabelled: always 0).
        num_options: The question's number of options; 0 for an open-ended question.
    """
    if num_options == 0:
        return rule_score(answer, gold)
    return float(answer is not None and gold is not None and answer == gold)
