"""The open-ended answer term: the rule score, and the LLM judge's strict verdicts, cache and fallbacks.

The judge's client here is the real ``ChatEndpoint`` pointed at a port nobody listens on (a real
connection error, retried, then the rule score stands in); the judge against a real server that
answers is ``tests/test_judge_serve.py``.
"""

from __future__ import annotations

import logging
import socket

import pytest
import torch

from tests.test_memory_loop import make_qa
from tests.test_rl_rollout import CountingPolicy
from videomem.rl.judge import DEFAULT_SCALE, Judge, build_judge, parse_verdict
from videomem.rl.rewards import RewardConfig, answer_reward, compute_rewards
from videomem.rl.rollout import RolloutConfig, prpo_rollout

OPEN = "<memory>first colours so far: red</memory><answer>{}</answer>"
PROMPT = "Question: {question}\nReference: {reference}\nAnswer: {prediction}"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # free once the socket closes: nothing listens there


def test_open_ended_answer_term_is_the_rule_score_and_mc_unchanged():
    texts = [OPEN.format("red blue"), OPEN.format("red"), OPEN.format(""), OPEN.format("blue red")]
    values = answer_reward(texts, ["red blue"] * 4, num_options=0)
    assert values == pytest.approx([1.0, 4 / 9, 0.0, 0.5])  # worked in test_memory_scoring.py
    mixed = answer_reward([OPEN.format("B"), OPEN.format("B")], ["B", "red"], num_options=[4, 0])
    assert mixed == [1.0, 0.0]


def test_format_and_tcr_totals_work_unchanged_for_open_ended_steps():
    texts = [OPEN.format("red blue"), "<memory>m</memory>", OPEN.format("x" * 2000)]
    totals, terms = compute_rewards(
        texts,
        ["red blue"] * 3,
        weights={"answer": 1.0, "format": 1.0},
        clip_index=1,
        num_clips=4,
        num_options=0,
    )
    assert terms["format"] == [1.0, 0.0, 0.0]  # over-long answer: no valid format, scored 0
    assert totals == [2.0, 0.0, 0.0]


@pytest.mark.parametrize(
    ("reply", "score"),
    [
        ("correct", 1.0),
        (" Partly correct.\n", 0.5),
        ("WRONG", 0.0),
        ("correct!", None),
        ("The answer is correct", None),
        ("correct.\nwrong", None),
        ("", None),
    ],
)
def test_verdicts_are_parsed_strictly(reply, score):
    assert parse_verdict(reply, DEFAULT_SCALE) == score


def test_a_dead_judge_falls_back_to_the_rule_counts_and_logs_and_never_raises(caplog):
    judge = build_judge(
        "grade", PROMPT, base_url=f"http://127.0.0.1:{closed_port()}/v1", model="judge",
        timeout=2.0, retries=1, backoff=0.01, max_in_flight=2,
    )  # fmt: skip
    texts = [OPEN.format("red"), OPEN.format("red"), OPEN.format("blue"), OPEN.format("")]
    with caplog.at_level(logging.WARNING, logger="videomem.rl.judge"):
        values = answer_reward(texts, ["red blue"] * 4, num_options=0, question="Which?", judge=judge)
    assert values == pytest.approx([4 / 9, 4 / 9, 4 / 9, 0.0])  # the rule; an empty answer asks nobody
    assert judge.endpoint.calls == 2 * 2  # two distinct answers, each tried twice (one retry)
    assert judge.take_stats() == {
        "judge/requests": 2.0, "judge/cache_hits": 1.0, "judge/errors": 2.0, "judge/unparsable": 0.0,
        "judge/fallbacks": 3.0,
    }  # fmt: skip
    assert judge.take_stats()["judge/requests"] == 0.0  # counts are per period
    assert "judge failed" in caplog.text and "rule score stands in" in caplog.text


class Replies:
    """An endpoint stand-in that replies from a table (the HTTP path is tested above and in test_judge_serve)."""

    def __init__(self, table: dict[str, str]) -> None:
        self.table, self.sent = table, []

    def map(self, requests):
        self.sent += [r[-1]["content"] for r in requests]
        return [self.table.get(r[-1]["content"].rsplit(": ", 1)[-1], RuntimeError("down")) for r in requests]


def test_verdicts_replace_the_rule_and_are_cached_by_question_reference_and_prediction():
    endpoint = Replies({"red blue": "correct", "red": "partly correct", "blue": "I think wrong"})
    judge = Judge(endpoint, "grade", PROMPT)
    texts = [OPEN.format(a) for a in ("red blue", "red", "blue", "green")]
    assert answer_reward(texts, ["red blue"] * 4, num_options=0, question="Q", judge=judge) == pytest.approx(
        [1.0, 0.5, 4 / 9, 0.0]
    )  # "blue": unparsable -> rule; "green": server error -> rule (0)
    assert endpoint.sent[0] == "Question: Q\nReference: red blue\nAnswer: red blue"
    answer_reward(texts[:2], ["red blue"] * 2, num_options=0, question="Q", judge=judge)
    answer_reward(texts[:1], ["red blue"], num_options=0, question="Q2", judge=judge)  # another question
    assert len(endpoint.sent) == 4 + 0 + 1
    stats = judge.take_stats()
    assert (stats["judge/requests"], stats["judge/cache_hits"], stats["judge/unparsable"]) == (5.0, 2.0, 1.0)
    assert (stats["judge/errors"], stats["judge/fallbacks"]) == (1.0, 2.0)


def test_bad_judge_settings_are_refused():
    with pytest.raises(ValueError, match="lacks"):
        Judge(Replies({}), "", "Answer: {prediction}")
    with pytest.raises(ValueError, match="scale"):
        Judge(Replies({}), "", PROMPT, scale={"correct": 2.0})


@pytest.mark.parametrize("name", ["prpo", "eval"])
def test_judge_group_builds_a_judge_for_prpo_and_eval(compose_cfg, monkeypatch, name):
    import hydra

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    cfg = compose_cfg(name, ["judge=openai", "judge.timeout=5"])
    assert cfg.judge.api_key is None  # the key stays out of the config (and of logged hparams)
    node = cfg.module.reward.judge if name == "prpo" else cfg.judge
    judge = hydra.utils.instantiate(node)
    assert isinstance(judge, Judge) and judge.scale == DEFAULT_SCALE and judge.endpoint.timeout == 5.0
    assert judge.endpoint.client.api_key == "sk-test"
    assert compose_cfg(name).get("judge") is None
    if name == "prpo":
        assert compose_cfg(name).module.reward.judge is None
        module = hydra.utils.instantiate(cfg.module)
        assert isinstance(module.reward_cfg.judge, Judge)


class OpenPolicy(CountingPolicy):
    """Scripted replies to an open-ended question (by clip and memory shown), as CountingPolicy does."""

    SCRIPT = {
        (0, ""): [OPEN.format("red"), "no tags at all"],
        (1, "first colours so far: red"): [OPEN.format("red"), OPEN.format("red blue")],
    }

    def generate(self, inputs, *, num_samples=1, do_sample=False, **kw):
        rows = []
        for key in inputs.keys:
            replies = self.SCRIPT[key]
            picks = [replies[g % len(replies)] if do_sample else replies[0] for g in range(num_samples)]
            rows.append([[self._id(text)] for text in picks])
        return rows


def test_psp_carries_an_open_ended_memory_and_tcr_scores_it_by_the_rule():
    qa = make_qa(0, 2)
    qa.options, qa.answer = [], "red blue"  # open-ended
    rollout = prpo_rollout(
        OpenPolicy(), [qa], RolloutConfig(group_size=2), RewardConfig(), generator=torch.Generator()
    )
    nodes = rollout.tree.nodes
    assert [n.reward_terms["answer"] for n in nodes] == pytest.approx([4 / 9, 0.0, 4 / 9, 1.0])  # the rule
    assert [n.reward_terms["format"] for n in nodes] == [1.0, 0.0, 1.0, 1.0]
    first = [n for n in rollout.tree.nodes if n.clip_index == 0]
    assert first[0].selected and not first[1].selected  # the only format-valid sample is carried on
    assert [n.memory_in for n in rollout.tree.nodes if n.clip_index == 1] == ["first colours so far: red"] * 2
    assert not any(k.startswith("judge/") for k in rollout.stats)
