"""Group advantages, PSP temperature and selection, and the rollout tree: worked numbers."""

from __future__ import annotations

import math

import pytest
import torch

from videomem.rl.advantages import (
    RolloutTree,
    group_advantages,
    group_ids_from_keys,
    psp_select,
    psp_temperature,
    step_advantages,
)


def test_group_advantages_worked_example_population_std():
    a = group_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), torch.tensor([0, 0, 0, 0]))
    # mean 0.5, population std 0.5 -> +-1 (up to eps)
    assert torch.allclose(a, torch.tensor([1.0, -1.0, -1.0, 1.0]), atol=1e-5)
    # rewards [2, 1, 0] : mean 1, population std sqrt(2/3) = 0.8165 -> [1.2247, 0, -1.2247]
    a = group_advantages(torch.tensor([2.0, 1.0, 0.0]), torch.tensor([7, 7, 7]))
    assert torch.allclose(a, torch.tensor([1.2247449, 0.0, -1.2247449]), atol=1e-5)


def test_group_advantages_per_group_and_degenerate_groups_are_zero():
    rewards = torch.tensor([1.0, 0.0, 0.3, 0.3, 0.3, 5.0, 2.0, 4.0])
    groups = torch.tensor([3, 3, 9, 9, 9, 1, 4, 4])  # interleaved labels are fine
    a = group_advantages(rewards, groups)
    assert torch.allclose(a[:2], torch.tensor([1.0, -1.0]), atol=1e-5)
    assert torch.equal(a[2:6], torch.zeros(4))  # equal rewards, size-1 group: exactly zero
    assert torch.allclose(a[6:], torch.tensor([-1.0, 1.0]), atol=1e-5)


def test_group_advantages_unscaled_is_mean_centred_and_keeps_reward_scale():
    # one lucky sample of 4: z-score gives sqrt(3) = 1.732, mean-centred 1 - 1/4 = 0.75
    lucky = torch.tensor([1.0, 0.0, 0.0, 0.0])
    assert torch.allclose(
        group_advantages(lucky, torch.zeros(4)),
        torch.tensor([1.7320508, -0.5773503, -0.5773503, -0.5773503]),
        atol=1e-5,
    )
    a = group_advantages(lucky, torch.zeros(4), scale=False)
    assert torch.allclose(a, torch.tensor([0.75, -0.25, -0.25, -0.25]))
    # a reward weight of 0.25 (linear schedule, clip 1 of 4) survives without scaling, cancels with it
    assert torch.allclose(group_advantages(0.25 * lucky, torch.zeros(4), scale=False), 0.25 * a)
    assert torch.allclose(
        group_advantages(0.25 * lucky, torch.zeros(4)), group_advantages(lucky, torch.zeros(4)), atol=1e-4
    )
    # degenerate groups stay exactly zero
    assert torch.equal(
        group_advantages(torch.tensor([0.3, 0.3, 2.0]), torch.tensor([0, 0, 1]), scale=False), torch.zeros(3)
    )


def test_group_ids_from_keys_first_seen_order():
    assert group_ids_from_keys([("a", 0), ("b", 0), ("a", 0), ("a", 1)]).tolist() == [0, 1, 0, 2]


def test_psp_temperature_schedule_numbers():
    assert psp_temperature(0) == pytest.approx(0.7)  # t = 1
    assert psp_temperature(2) == pytest.approx(0.343)  # 0.7^3
    assert psp_temperature(1, tau0=2.0, gamma=0.5) == pytest.approx(0.5)
    assert psp_temperature(0, train_step=10, step_gamma=0.9) == pytest.approx(0.7 * 0.9**10)
    assert psp_temperature(0, train_step=10) == pytest.approx(0.7)  # no step_gamma: no step annealing
    assert psp_temperature(50, min_tau=1e-3) == 1e-3


def test_psp_select_only_valid_and_empty_when_none_valid():
    adv = torch.tensor([3.0, 2.0, -1.0, 0.5])
    valid = torch.tensor([False, True, True, False])
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        assert set(psp_select(adv, valid, tau=10.0, k=1, generator=g)) <= {1, 2}
    assert sorted(psp_select(adv, valid, tau=1.0, k=4, generator=g)) == [1, 2]  # k capped by #valid
    assert psp_select(adv, torch.zeros(4, dtype=torch.bool), tau=1.0, generator=g) == []


def test_psp_select_tau_to_zero_is_argmax_and_k_distinct():
    adv = torch.tensor([0.1, 0.9, 0.5, -2.0])
    valid = torch.ones(4, dtype=torch.bool)
    g = torch.Generator().manual_seed(1)
    assert all(psp_select(adv, valid, tau=1e-4, generator=g) == [1] for _ in range(20))
    assert psp_select(adv, valid, tau=1e-4, k=3, generator=g) == [1, 2, 0]
    assert psp_select(adv, valid, tau=0.0, k=2) == [1, 2]
    picks = psp_select(adv, valid, tau=5.0, k=4, generator=g)
    assert sorted(picks) == [0, 1, 2, 3]


def test_psp_select_frequencies_follow_softmax_and_seed_is_deterministic():
    adv = torch.tensor([1.0, 0.0])
    valid = torch.ones(2, dtype=torch.bool)
    g = torch.Generator().manual_seed(0)
    n = 4000
    hits = sum(psp_select(adv, valid, tau=1.0, generator=g) == [0] for _ in range(n))
    p0 = math.exp(1) / (math.exp(1) + 1)  # 0.731
    assert abs(hits / n - p0) < 0.03

    def run() -> list[list[int]]:
        g = torch.Generator().manual_seed(5)
        return [psp_select(adv, valid, tau=1.0, generator=g) for _ in range(5)]

    assert run() == run()
    draws = [
        psp_select(
            torch.zeros(8),
            torch.ones(8, dtype=torch.bool),
            tau=1.0,
            k=2,
            generator=torch.Generator().manual_seed(s),
        )
        for s in range(2)
    ]
    assert draws[0] != draws[1]  # the seed matters


def _tree() -> RolloutTree:
    """One example, 2 clips, G=2, K=1: roots 0,1; node 0 carried; children 2,3 of node 0."""
    tree = RolloutTree()
    tree.add(
        parent_id=None, example_index=0, clip_index=0, memory_in="", output="o0", memory_out="m0", reward=2.0
    )
    tree.add(
        parent_id=None, example_index=0, clip_index=0, memory_in="", output="o1", memory_out=None, reward=0.0
    )
    tree.nodes[0].selected = True
    tree.add(
        parent_id=0, example_index=0, clip_index=1, memory_in="m0", output="o2", memory_out="m2", reward=1.0
    )
    tree.add(
        parent_id=0, example_index=0, clip_index=1, memory_in="m0", output="o3", memory_out="m3", reward=1.0
    )
    return tree


def test_rollout_tree_structure():
    tree = _tree()
    assert [n.node_id for n in tree.children(0)] == [2, 3]
    assert tree.children(1) == []
    assert [n.node_id for n in tree.roots(0)] == [0, 1]
    with pytest.raises(ValueError):
        tree.add(parent_id=99, example_index=0, clip_index=1, memory_in="", output="", memory_out=None)


def test_step_advantages_group_siblings_of_one_parent_with_psp():
    """K=2 carried memories: two parents, two sibling groups of G=2."""
    adv = step_advantages([2.0, 0.0, 1.0, 1.0], [4, 4, 7, 7], psp=True)
    assert adv == pytest.approx([1.0, -1.0, 0.0, 0.0], abs=1e-5)
    first = step_advantages([2.0, 0.0], [None, None])  # the first clip: one prompt, one group
    assert first == pytest.approx([1.0, -1.0], abs=1e-5)


def test_step_advantages_group_the_whole_clip_across_chains_without_psp():
    """psp=false: the G=4 chains have different parents but form one group."""
    rewards, parents = [2.0, 0.0, 1.0, 1.0], [4, 5, 6, 7]
    assert step_advantages(rewards, parents, psp=False) == pytest.approx(
        [math.sqrt(2), -math.sqrt(2), 0.0, 0.0], abs=1e-5
    )
    assert step_advantages(rewards, parents, psp=True) == [0.0] * 4  # groups of one: no signal
    unscaled = step_advantages(rewards, parents, psp=False, scale=False)
    assert unscaled == pytest.approx([1.0, -1.0, 0.0, 0.0])


def test_rollout_tree_text_and_dict():
    tree = _tree()
    text = tree.to_text()
    lines = text.splitlines()
    assert len(lines) == 4
    assert lines[0].startswith("*[0] ex0 clip0 R=+2.000")
    assert lines[1].startswith("   [2] ex0 clip1")  # indented child of node 0
    assert lines[3].startswith(" [1]")
    d = tree.to_dict()
    assert d["nodes"][2]["parent_id"] == 0 and d["nodes"][1]["memory_out"] is None
