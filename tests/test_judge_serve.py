"""The LLM judge against a REAL ``transformers serve`` on 127.0.0.1, started and stopped by this module.

The served model is the project's tiny Qwen2 LM made to reply one verdict ("correct", then its end
token: ``teacher.local.scripted_writer_model``). So the whole HTTP path runs for real (chat template, generation, the OpenAI-compatible
reply, N requests in flight, retries, timeouts), and the strict verdict parser sees a real reply. Slow:
the server takes about 20 s to start on a CPU.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from tests.serving import served
from tests.test_memory_loop import make_qa
from tests.test_rl_judge import OPEN, OpenPolicy
from videomem.rl.judge import build_judge
from videomem.rl.rewards import RewardConfig, answer_reward
from videomem.rl.rollout import RolloutConfig, prpo_rollout

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        any(importlib.util.find_spec(m) is None for m in ("fastapi", "uvicorn", "openai")),
        reason="transformers serve needs fastapi, uvicorn and openai",
    ),
]
VERDICT = "correct"
PROMPT = "Question: {question}\nReference answer: {reference}\nAnswer to grade: {prediction}\nVerdict:"


@pytest.fixture(scope="module")
def judge_server(tmp_path_factory):
    """``(base_url, model name)`` of a `transformers serve` process serving the verdict model."""
    from videomem.teacher.local import scripted_writer_model

    model, tok = scripted_writer_model(VERDICT)
    with served(model, tok, tmp_path_factory.mktemp("judge") / "verdict-lm") as server:
        yield server


def _judge(server, **kw):
    url, model = server
    settings = dict(
        base_url=url, model=model, max_in_flight=4, timeout=60.0, retries=1, backoff=0.1, max_tokens=8
    )
    return build_judge("Grade the answer.", PROMPT, **{**settings, **kw})


def _open(answer: str) -> str:
    return OPEN.format(answer)


def test_verdicts_come_from_the_server_are_cached_and_failures_fall_back(judge_server):
    judge = _judge(judge_server)
    texts = [_open(a) for a in ("red", "red blue", "blue", "red", "green green")] + ["<memory>m</memory>"]
    values = answer_reward(texts, ["red blue"] * 6, num_options=0, question="Which?", judge=judge)
    assert values == [1.0] * 5 + [0.0]  # the server said "correct" to each answer; no answer: no request
    assert judge.take_stats() == {
        "judge/requests": 4.0, "judge/cache_hits": 1.0, "judge/errors": 0.0, "judge/unparsable": 0.0,
        "judge/fallbacks": 0.0,
    }  # fmt: skip
    # a real reply outside the scale is unparsable: the rule score stands in
    binary = _judge(judge_server, scale={"judgement: 1": 1.0, "judgement: 0": 0.0})
    assert answer_reward(texts[:2], ["red blue"] * 2, num_options=0, judge=binary) == pytest.approx(
        [4 / 9, 1.0]
    )
    assert binary.take_stats()["judge/unparsable"] == 2.0
    # a request that times out (twice: one retry) falls back too, and nothing raises
    hasty = _judge(judge_server, timeout=0.001)
    assert answer_reward(texts[:1], ["red blue"], num_options=0, judge=hasty) == pytest.approx([4 / 9])
    stats = hasty.take_stats()
    assert (stats["judge/errors"], stats["judge/fallbacks"]) == (1.0, 1.0) and hasty.endpoint.calls == 2


def test_a_psp_rollout_scores_open_ended_answers_through_the_judge_and_logs_it(judge_server):
    qa = make_qa(0, 2)
    qa.options, qa.answer = [], "red blue"  # open-ended
    reward = RewardConfig(answer_target="provisional", judge=_judge(judge_server))
    rollout = prpo_rollout(
        OpenPolicy(), [qa], RolloutConfig(group_size=2, max_new_tokens=8), reward, generator=torch.Generator()
    )
    terms = [(n.clip_index, n.reward_terms["answer"], n.reward_terms["format"]) for n in rollout.tree.nodes]
    assert terms == [(0, 1.0, 1.0), (0, 0.0, 0.0), (1, 1.0, 1.0), (1, 1.0, 1.0)]  # judge: "correct"
    assert [n.memory_in for n in rollout.tree.nodes if n.clip_index == 1] == ["first colours so far: red"] * 2
    assert rollout.stats["judge/requests"] == 2.0 and rollout.stats["judge/cache_hits"] == 1.0
    assert rollout.stats["judge/fallbacks"] == 0.0
