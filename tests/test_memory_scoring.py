"""memory/scoring.py: what an answer is worth, with worked numbers for the rule (the ROUGE mean)."""

from __future__ import annotations

import pytest

from videomem.memory.scoring import answer_score, normalize_words, rouge_l, rouge_n, rule_score


def test_normalisation_is_squads():
    assert normalize_words("The Red, blue; and an orange!") == ["red", "blue", "and", "orange"]


def test_rouge_parts_worked_numbers():
    pred, ref = ["red", "blue", "green"], ["red", "green", "blue"]
    assert rouge_n(pred, ref, 1) == 1.0  # same words
    assert rouge_n(pred, ref, 2) == 0.0  # no bigram in common
    assert rouge_l(pred, ref) == pytest.approx(2 / 3)  # LCS "red blue": P = R = 2/3
    assert rouge_n(["a", "a", "b"], ["a", "b"], 1) == pytest.approx(0.8)  # clipped: P 2/3, R 1


@pytest.mark.parametrize(
    ("answer", "reference", "score"),
    [
        ("red blue green", "red green blue", (1 + 0 + 2 / 3) / 3),  # right colours, wrong order
        ("red blue green", "red blue green", 1.0),
        ("Red, blue, green.", "red blue green", 1.0),  # exact after normalisation
        ("red", "red blue", (2 / 3 + 0 + 2 / 3) / 3),  # one of two: R1 = RL = 2/3, no bigram
        ("black cat", "the cat", (2 / 3 + 2 / 3) / 2),  # one-word reference: token F1 (no ROUGE-2)
        ("A cat", "cat", 1.0),
        ("dog", "cat", 0.0),
        (None, "cat", 0.0),  # unparsable / over-long
        ("cat", None, 0.0),  # no reference
        ("...", "cat", 0.0),  # nothing left after normalisation
    ],
)
def test_rule_score_worked_numbers(answer, reference, score):
    assert rule_score(answer, reference) == pytest.approx(score)


def test_answer_score_by_kind():
    assert answer_score("B", "B", 4) == 1.0 and answer_score("A", "B", 4) == 0.0
    assert answer_score(None, "B", 4) == 0.0 and answer_score("B", None, 4) == 0.0
    assert answer_score("red blue", "red blue", 0) == 1.0
    assert answer_score("B", "B blue", 0) == pytest.approx(rule_score("B", "B blue"))  # open: no letters
