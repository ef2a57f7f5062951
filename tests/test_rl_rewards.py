"""TCR rewards (method.md Eq. 1) on hand-written completions, with worked totals."""

from __future__ import annotations

import pytest

from videomem.rl.rewards import (
    DEFAULT_MAX_MEMORY_TOKENS,
    DEFAULT_WEIGHTS,
    REWARD_FUNCS,
    RewardConfig,
    answer_reward,
    answer_weight,
    compute_rewards,
    format_reward,
    memory_length_penalty,
)

GOOD = "<memory>red ball at 0:10</memory><answer>B</answer>"
WRONG = "<memory>red ball at 0:10</memory><answer>C</answer>"
NO_MEMORY = "<answer>B</answer>"
TWO_ANSWERS = "<memory>x</memory><answer>B</answer><answer>B</answer>"
LONG = "<memory>" + "word " * 1100 + "</memory><answer>B</answer>"
OUT_OF_RANGE = "<memory>x</memory><answer>E</answer>"  # only A-D exist for 4 options

COMPLETIONS = [GOOD, WRONG, NO_MEMORY, TWO_ANSWERS, LONG, OUT_OF_RANGE]
GOLD = ["B"] * len(COMPLETIONS)
# Memory lengths as the caller's tokenizer would count them (NO_MEMORY's 5000 must be ignored).
TOKENS = [5, 5, 5000, 1, 1100, 1]


def test_answer_reward_only_for_the_single_valid_gold_letter():
    assert answer_reward(COMPLETIONS, GOLD) == [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]


def test_answer_texts_score_another_output_and_only_the_answer_term():
    # each completion's own answer says B, B, C; the outputs it leads to say C, B, (none)
    own = [GOOD, GOOD, WRONG]
    led_to = [WRONG, GOOD, None]
    assert answer_reward(own, ["B"] * 3, answer_texts=led_to) == [0.0, 1.0, 0.0]
    totals, parts = compute_rewards(
        own,
        ["B"] * 3,
        weights=DEFAULT_WEIGHTS,
        clip_index=0,
        num_clips=4,
        memory_tokens=[5] * 3,
        answer_texts=led_to,
    )
    assert parts["format"] == [1.0, 1.0, 1.0]  # format is still the completion's own
    assert totals == [1.0, 2.0, 1.0]
    with pytest.raises(ValueError, match="answer_texts"):
        answer_reward(own, ["B"] * 3, answer_texts=led_to[:2])


def test_format_reward_needs_one_memory_then_one_answer():
    assert format_reward(COMPLETIONS, GOLD) == [1.0, 1.0, 0.0, 0.0, 1.0, 0.0]
    assert format_reward(["  " + GOOD + "\n"], ["B"]) == [1.0]
    assert format_reward(["<answer>B</answer><memory>m</memory>"], ["B"]) == [0.0]


def test_memory_length_penalty_is_positive_excess_and_zero_without_memory():
    assert memory_length_penalty(COMPLETIONS, GOLD, memory_tokens=TOKENS, max_memory_tokens=1024) == [
        0.0,
        0.0,
        0.0,  # no memory block: nothing to penalise
        0.0,
        76.0,  # 1100 - 1024
        0.0,
    ]
    assert memory_length_penalty([GOOD], ["B"], memory_tokens=[5], max_memory_tokens=3) == [2.0]


def test_num_options_column_widens_the_valid_letters():
    assert answer_reward([OUT_OF_RANGE], ["E"], num_options=4) == [0.0]
    assert answer_reward([OUT_OF_RANGE], ["E"], num_options=[5]) == [1.0]


def test_compute_rewards_paper_weights_worked_totals():
    totals, parts = compute_rewards(
        COMPLETIONS,
        GOLD,
        weights=DEFAULT_WEIGHTS,
        clip_index=1,
        num_clips=4,
        memory_tokens=TOKENS,
        max_memory_tokens=1024,
    )
    # R = 1.0 * acc + 1.0 * fmt - 0.005 * max(0, len - 1024)
    assert totals == pytest.approx([2.0, 1.0, 1.0, 0.0, 2.0 - 0.38, 0.0])
    assert set(parts) == {"answer", "format", "memory_length"}
    assert parts["memory_length"][4] == 76.0


def test_memory_penalty_off_and_unknown_term():
    totals, _ = compute_rewards(
        [LONG],
        ["B"],
        weights={**DEFAULT_WEIGHTS, "memory_length": 0.0},
        clip_index=0,
        num_clips=4,
        memory_tokens=[1100],
    )
    assert totals == [2.0]
    with pytest.raises(KeyError):
        compute_rewards([GOOD], ["B"], weights={"bogus": 1.0}, clip_index=0, num_clips=4)


def test_terminal_reward_is_zero_before_the_last_clip_but_components_are_kept():
    kw = dict(weights=DEFAULT_WEIGHTS, num_clips=4, tcr=False, memory_tokens=[5, 5])
    for t in range(3):
        totals, parts = compute_rewards([GOOD, WRONG], ["B", "B"], clip_index=t, **kw)
        assert totals == [0.0, 0.0]
        assert parts["answer"] == [1.0, 0.0]
    totals, _ = compute_rewards([GOOD, WRONG], ["B", "B"], clip_index=3, **kw)
    assert totals == [2.0, 1.0]


def test_linear_answer_weight_rises_to_alpha_at_the_last_clip():
    assert [answer_weight(1.0, t, 4, "linear") for t in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert answer_weight(2.0, 0, 4, "constant") == 2.0
    totals, _ = compute_rewards(
        [GOOD],
        ["B"],
        weights={"answer": 1.0, "format": 1.0},
        clip_index=0,
        num_clips=4,
        answer_weight_schedule="linear",
    )
    assert totals == [1.25]
    with pytest.raises(ValueError):
        answer_weight(1.0, 0, 4, "cosine")


def test_registry_names_match_config_weights():
    assert set(REWARD_FUNCS) == set(DEFAULT_WEIGHTS)


def test_reward_config_defaults_are_the_default_weights():
    cfg = RewardConfig()
    assert cfg.weights() == DEFAULT_WEIGHTS and cfg.max_memory_tokens == DEFAULT_MAX_MEMORY_TOKENS
    assert RewardConfig(beta=0.5, memory_penalty=False).weights()["memory_length"] == 0.0
    assert RewardConfig(alpha=2.0, format_weight=0.5).weights() == {
        "answer": 2.0,
        "format": 0.5,
        "memory_length": DEFAULT_WEIGHTS["memory_length"],
    }
