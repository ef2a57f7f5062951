"""PSP rollouts on a scripted policy: which answer the TCR answer term scores (``answer_target``).

The script is a counting question whose first clip tempts an early guess: over-counting at clip 1
names the final count, so the paper's provisional-answer reward pays it, while the loop continued
from that memory ends one too high. ``answer_target=continuation`` scores the continued loop's last
answer instead, and pays the memory that counts right.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

import videomem.rl.rollout as rollout_module
from tests.test_memory_loop import make_qa, pixel_qa
from videomem.rl.rewards import RewardConfig
from videomem.rl.rollout import RolloutConfig, prpo_rollout


def out(memory: str, answer: str) -> str:
    return f"<memory>{memory}</memory><answer>{answer}</answer>"


# (clip, carried memory) -> replies; sampled steps cycle through them, greedy steps take the first.
# Clip 1 holds one object, clip 2 none; the gold count is 2 ("B").
SCRIPT = {
    (0, ""): [out("so far: 1", "A"), out("so far: 2", "B")],
    (1, "so far: 1"): [out("so far: 2", "B")],
    (1, "so far: 2"): [out("so far: 3", "C")],
    (2, "so far: 2"): [out("so far: 2", "B")],
    (2, "so far: 3"): [out("so far: 3", "C")],
}


@dataclass
class _Inputs:
    keys: list[tuple[int, str]]

    def to(self, device):
        return self


class CountingPolicy:
    """Replies from ``SCRIPT`` by (clip, memory shown); records the (clip, memory, samples) of every call."""

    system_prompt = ""

    class model:  # noqa: N801 - stands in for the HF model's .device
        device = torch.device("cpu")

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.calls: list[tuple[int, str, int]] = []

    def build_inputs(self, messages, videos, completions=None):
        keys = []
        for msgs, video in zip(messages, videos):
            memory = msgs[-1]["content"][1]["text"].rsplit("Memory: ", 1)[1]
            keys.append((int(video[0, 0, 0, 1]), "" if memory == "(empty)" else memory))
        return _Inputs(keys)

    def generate(self, inputs, *, num_samples=1, do_sample=False, **kw):
        rows = []
        for key in inputs.keys:
            self.calls.append((*key, num_samples))
            replies = SCRIPT[key]
            picks = [replies[g % len(replies)] if do_sample else replies[0] for g in range(num_samples)]
            rows.append([[self._id(text)] for text in picks])
        return rows

    def _id(self, text: str) -> int:
        self.texts.append(text)
        return len(self.texts) - 1

    def decode(self, ids):
        return self.texts[ids[0]]

    def count_tokens(self, text):
        return len(text.split())


def _rollout(policy, target: str, **reward):
    qa = make_qa(0, 3)
    cfg = RolloutConfig(group_size=4, max_new_tokens=8)
    rcfg = RewardConfig(answer_target=target, **reward)
    return prpo_rollout(policy, [qa], cfg, rcfg, generator=torch.Generator().manual_seed(0))


def _first_clip(rollout) -> dict[str, float]:
    return {n.memory_out: n.advantage for n in rollout.tree.nodes if n.clip_index == 0}


def test_provisional_answer_pays_the_early_guess():
    rollout = _rollout(CountingPolicy(), "provisional")
    adv = _first_clip(rollout)
    assert adv["so far: 2"] > 0 > adv["so far: 1"]  # the paper's TCR: the over-count is rewarded
    first = [n for n in rollout.tree.nodes if n.clip_index == 0]
    assert [n.reward_terms["answer"] for n in first] == [0.0, 1.0, 0.0, 1.0]


def test_continuation_pays_the_memory_that_leads_to_the_gold_answer():
    policy = CountingPolicy()
    rollout = _rollout(policy, "continuation")
    adv = _first_clip(rollout)
    assert adv["so far: 1"] > 0 > adv["so far: 2"]
    first = [n for n in rollout.tree.nodes if n.clip_index == 0]
    assert [n.reward_terms["answer"] for n in first] == [1.0, 0.0, 1.0, 0.0]
    # PSP carries a memory chosen by these advantages; the last clip is scored on its own answer
    last = [n for n in rollout.tree.nodes if n.clip_index == 2]
    assert all(n.reward_terms["answer"] == float(n.output.endswith("<answer>B</answer>")) for n in last)
    # one greedy chain per distinct memory (the four siblings wrote two): clips 1 and 2 from each
    # clip-0 memory. The clip-1 siblings then write what the chain from their memory wrote at clip 1,
    # a state that chain already continued from: no chain of their own
    greedy = sorted(c[:2] for c in policy.calls if c[2] == 1)
    assert greedy == [(1, "so far: 1"), (1, "so far: 2"), (2, "so far: 2"), (2, "so far: 3")]
    assert {n.memory_out for n in rollout.tree.nodes if n.clip_index == 1} <= {"so far: 2", "so far: 3"}


def _without_reuse(monkeypatch) -> None:
    """Every clip's continuations from scratch (a fresh state table per call): the reference."""
    original = rollout_module._continuation_answers
    monkeypatch.setattr(rollout_module, "_continuation_answers", lambda *args: original(*args[:6], {}))


def _scores(rollout) -> list[tuple]:
    return [(n.output, n.reward_terms, n.advantage, n.selected) for n in rollout.tree.nodes]


def test_reusing_visited_states_changes_no_score_and_saves_chains(monkeypatch):
    reused = CountingPolicy()
    expected = _scores(_rollout(reused, "continuation"))
    _without_reuse(monkeypatch)
    fresh = CountingPolicy()
    assert _scores(_rollout(fresh, "continuation")) == expected
    greedy = [c for c in fresh.calls if c[2] == 1]
    assert len(greedy) == len([c for c in reused.calls if c[2] == 1]) + 1  # (2, carried memory) again


def test_reusing_visited_states_on_a_real_policy_gives_the_same_tree(monkeypatch):
    from videomem.model.policy import build_policy

    policy = build_policy("qwen2_5_vl", tiny={"hidden_size": 64, "num_hidden_layers": 2}).eval()
    g = torch.Generator().manual_seed(0)
    qas = [pixel_qa(i, 3, 2 * policy.patch_multiple, g) for i in range(2)]
    cfg = RolloutConfig(group_size=4, max_new_tokens=6)
    rcfg = RewardConfig(answer_target="continuation")

    rows = []
    loop = rollout_module.run_memory_loop
    monkeypatch.setattr(
        rollout_module, "run_memory_loop", lambda p, q, *a, **k: rows.append(len(q)) or loop(p, q, *a, **k)
    )

    def run():
        rows.clear()
        scores = _scores(prpo_rollout(policy, qas, cfg, rcfg, generator=torch.Generator().manual_seed(1)))
        return scores, sum(rows)

    expected, reused_rows = run()
    _without_reuse(monkeypatch)
    scores, fresh_rows = run()
    assert scores == expected
    assert reused_rows < fresh_rows


def test_terminal_reward_needs_no_continuation():
    policy = CountingPolicy()
    rollout = _rollout(policy, "continuation", tcr=False)
    assert all(c[2] == 4 for c in policy.calls)  # only the G-sample steps ran
    assert all(n.advantage == 0.0 for n in rollout.tree.nodes if n.clip_index < 2)


def test_unknown_answer_target_is_refused():
    with pytest.raises(ValueError, match="answer_target"):
        RewardConfig(answer_target="final")


@pytest.mark.parametrize("rollout_kw", [{"psp": False}, {"keep": 2}], ids=["chains", "keep2"])
def test_a_rollout_encodes_each_clip_once(rollout_kw):
    """G chains or K kept memories per example, plus the continuation chains: many prompt rows show a
    clip, one vision encode serves them all (``rollout/decode/vision_encodes_per_clip``)."""
    from videomem.model.policy import build_policy

    policy = build_policy("qwen2_5_vl", tiny={"hidden_size": 64, "num_hidden_layers": 2}).eval()
    g = torch.Generator().manual_seed(0)
    qas = [pixel_qa(i, 3, 2 * policy.patch_multiple, g) for i in range(2)]
    cfg = RolloutConfig(group_size=3, max_new_tokens=6, **rollout_kw)
    seen, rows = [], policy.decode_stats.prompt_rows
    hook = policy.model.model.visual.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[0]))
    try:
        rollout = prpo_rollout(
            policy,
            qas,
            cfg,
            RewardConfig(answer_target="continuation"),
            generator=torch.Generator().manual_seed(1),
        )
    finally:
        hook.remove()
    clips = sum(qa.num_clips for qa in qas)
    assert policy.decode_stats.prompt_rows - rows > clips  # several prompt rows per clip (chains) ...
    assert rollout.stats["decode/vision_encodes_per_clip"] == 1.0  # ... one encode each clip
    per_clip = policy.build_inputs(*_one_prompt(qas[0])).pixel_values_videos.shape[0]
    assert sum(seen) == clips * per_clip  # the tower saw every clip's patches exactly once
    assert policy.vision_cache is None  # the features left with the rollout


def _one_prompt(qa):
    from videomem.memory.loop import step_messages

    return [step_messages(qa, 0, "")], [qa.clips[0]]
