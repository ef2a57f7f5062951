"""Training metrics over ranks (train/rank_metrics.py): sums and counts, never a mean of the ranks' means.

The reduction itself runs over real gloo ranks in tests/test_distributed_ddp.py; here the arithmetic:
two ranks' rollouts of different sizes, combined as the all-reduce would, give the statistics of all
their samples together.
"""

from __future__ import annotations

import pytest

from videomem.rl.advantages import RolloutTree
from videomem.rl.rollout import Rollout
from videomem.train.rank_metrics import reduce_over_ranks, rollout_sums_and_means, std_from_moments


def test_single_process_values_are_its_own():
    out = reduce_over_ranks(
        sums={"n": 3.0}, means={"acc": (2.0, 4.0), "none": (0.0, 0.0)}, maxes={"time": 1.5}
    )
    assert out == {"n": 3.0, "acc": 0.5, "time": 1.5}  # a mean nobody counted is left out


def _rollout(
    rewards: list[float],
    advantages: list[float],
    clips: list[int],
    judge_requests: float = 0.0,
    row_steps: tuple[int, int] = (0, 1),
) -> Rollout:
    tree = RolloutTree()
    for i, (r, a, t) in enumerate(zip(rewards, advantages, clips)):
        tree.add(
            parent_id=None,
            example_index=0,
            clip_index=t,
            memory_in="",
            output=f"o{i}",
            memory_out="m",
            reward=r,
            advantage=a,
            reward_terms={"answer": float(r > 0.5)},
        )
    last = [n for n in tree.nodes if n.clip_index == max(clips)]
    n = len(tree.nodes)
    stats = {  # as rl/rollout.py summarises one rank's rollout
        "reward/total": sum(rewards) / n,
        "reward/answer": sum(float(r > 0.5) for r in rewards) / n,
        "advantage/std": std_from_moments(sum(advantages) / n, sum(a * a for a in advantages) / n),
        "final_answer_accuracy": sum(n.reward_terms["answer"] for n in last) / len(last),
        "samples": float(n),
        "prompts": 1.0,
        "judge/requests": judge_requests,  # a count over the rank's rollout (rl/judge.py take_stats)
        "decode/row_steps_saved": row_steps[0] / row_steps[1],  # the decode engine's (rl/rollout.py)
        "decode/row_steps": float(row_steps[1]),
    }
    return Rollout(tree=tree, stats=stats)


def test_two_ranks_combine_into_the_statistics_of_all_samples():
    a = _rollout(
        [1.0, 0.0, 1.0, 1.0], [0.5, -1.5, 0.5, 0.5], [0, 0, 1, 1], judge_requests=3.0, row_steps=(30, 100)
    )
    b = _rollout([0.0, 0.0], [0.0, 0.0], [0, 1], judge_requests=2.0, row_steps=(0, 20))
    (sa, ma), (sb, mb) = rollout_sums_and_means(a), rollout_sums_and_means(b)
    sums = {k: sa[k] + sb[k] for k in sa}  # what the all-reduce adds
    means = {k: (ma[k][0] + mb[k][0], ma[k][1] + mb[k][1]) for k in ma}
    out = reduce_over_ranks(sums, means)
    both = _rollout([1.0, 0.0, 1.0, 1.0, 0.0, 0.0], [0.5, -1.5, 0.5, 0.5, 0.0, 0.0], [0, 0, 1, 1, 0, 1])
    assert out["rollout/samples"] == 6 and out["rollout/prompts"] == 2
    assert out["rollout/judge/requests"] == 5  # the judge's counts add up over ranks
    assert out["rollout/decode/row_steps"] == 120
    assert out["rollout/decode/row_steps_saved"] == pytest.approx(30 / 120)  # not (0.3 + 0) / 2 or by samples
    assert out["rollout/reward/total"] == pytest.approx(both.stats["reward/total"])  # 0.5, not (0.75+0)/2
    assert out["rollout/reward/answer"] == pytest.approx(both.stats["reward/answer"])
    assert out["rollout/final_answer_accuracy"] == pytest.approx(2 / 3)  # 2 of the 3 last-clip samples
    std = std_from_moments(out["rollout/advantage/_mean"], out["rollout/advantage/_mean_square"])
    assert std == pytest.approx(both.stats["advantage/std"])
