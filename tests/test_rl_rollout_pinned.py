"""The PRPO rollout's output, pinned: every sample, reward, advantage and PSP choice, bit for bit.

The default PRPO run is deterministic, so a change to ``prpo_rollout`` that only moves code must
give the same tree. A scripted policy draws its samples from the rollout's generator (as the real
policy's sampler does), so the digests below also pin the ORDER of the random draws: generation of
every prompt of a clip, then PSP selection example by example. The digests were recorded from the
rollout before it was split into its steps (and re-recorded when the stats gained ``truncated``, with
every node, sample and draw unchanged); a change of any value, of the call order or of a draw
changes them.

The policy is scripted rather than a random tiny VLM because a VLM's sampled tokens depend on the
CPU's floating-point kernels; ``test_rl_rollout.py`` runs the real policy.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest
import torch

from videomem.data.types import VideoQA
from videomem.rl.rewards import RewardConfig
from videomem.rl.rollout import RolloutConfig, prpo_rollout


@dataclasses.dataclass
class _Inputs:
    keys: list[tuple[int, int, str]]

    def to(self, device):
        return self


class SamplingPolicy:
    """Replies built from (video, clip, memory shown); sampled replies are drawn with the generator."""

    system_prompt = ""

    class model:  # noqa: N801 - stands in for the HF model's .device
        device = torch.device("cpu")

    def __init__(self) -> None:
        self.texts: list[str] = []

    @staticmethod
    def replies(vid: int, clip: int, memory: str) -> list[str]:
        grown = f"{memory} v{vid}c{clip}".strip()
        return [
            f"<memory>{grown}</memory><answer>B</answer>",
            f"<memory>{grown} x</memory><answer>A</answer>",
            f"<memory>{memory}</memory><answer>B</answer>",
            f"<answer>B</answer> {grown}",  # no memory block: format invalid, memory kept
            f"<memory>{grown} long long long</memory><answer>C</answer>",
            f"<memory>{grown}</memory><answer>Z</answer>",  # unparsable answer
        ]

    def build_inputs(self, messages, videos, completions=None):
        keys = []
        for msgs, video in zip(messages, videos):
            memory = msgs[-1]["content"][1]["text"].rsplit("Memory: ", 1)[1]
            memory = "" if memory == "(empty)" else memory
            keys.append((int(video[0, 0, 0, 0]), int(video[0, 0, 0, 1]), memory))
        return _Inputs(keys)

    def generate(self, inputs, *, num_samples=1, do_sample=False, generator=None, **kw):
        rows = []
        for vid, clip, memory in inputs.keys:
            replies = self.replies(vid, clip, memory)
            if do_sample:
                picks = torch.randint(len(replies), (num_samples,), generator=generator).tolist()
            else:
                picks = [(vid + clip + len(memory)) % len(replies)] * num_samples
            rows.append([self._id(replies[k]) for k in picks])
        return rows

    def _id(self, text: str) -> list[int]:
        self.texts.append(text)
        return [len(self.texts) - 1, len(text)]

    def decode(self, ids):
        return self.texts[ids[0]]

    def count_tokens(self, text):
        return len(text.split())


def _qa(vid: int, num_clips: int) -> VideoQA:
    clips = [torch.zeros(1, 2, 2, 3, dtype=torch.uint8) for _ in range(num_clips)]
    for t, c in enumerate(clips):
        c[..., 0], c[..., 1] = vid, t
    memories = [f"m{min(t, 1)}" for t in range(num_clips)]  # determined from the second clip on
    return VideoQA(
        f"v{vid}", "q", "How many?", ["1", "2", "3", "4"], "B", "count", clips, None, memories=memories
    )


CASES = {
    "default": ({}, {}),
    "keep2_step_tau": ({"keep": 2, "tau0": 2.0, "step_gamma": 0.9}, {}),
    "chains": ({"psp": False}, {}),
    "single": ({"group_size": 1, "keep": 2}, {}),  # often no valid sample: the parents go on
    "continuation": ({}, {"answer_target": "continuation"}),
    "continuation_chains": ({"psp": False}, {"answer_target": "continuation"}),
    "linear_unscaled_penalty": (
        {"gamma": 0.5},
        {
            "answer_weight_schedule": "linear",
            "scale_advantages": False,
            "max_memory_tokens": 2,
            "beta": 0.25,
        },
    ),
    "terminal_no_penalty": ({}, {"tcr": False, "memory_penalty": False, "max_memory_tokens": 1}),
}


def rollout_digest(rollout_kw: dict, reward_kw: dict) -> str:
    """sha256 of every node, sample and stat of a seeded rollout over three questions (3, 2, 3 clips)."""
    qas = [_qa(0, 3), _qa(1, 2), _qa(2, 3)]
    cfg = RolloutConfig(**({"group_size": 4, "max_new_tokens": 8} | rollout_kw))
    reward = RewardConfig(**reward_kw)
    gen = torch.Generator().manual_seed(7)
    rollout = prpo_rollout(SamplingPolicy(), qas, cfg, reward, generator=gen, train_step=3)
    samples = [
        [s.node_id, s.example_index, s.clip_index, s.messages, s.video[0, 0, 0].tolist(), s.completion]
        + [s.advantage, s.parent_id, s.completion_ids]
        for s in rollout.samples
    ]
    record = {
        "nodes": [dataclasses.asdict(n) for n in rollout.tree.nodes],
        "samples": samples,
        "stats": rollout.stats,
        "next_draw": torch.rand(1, generator=gen, dtype=torch.float64).item(),  # draws used up
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=repr).encode()).hexdigest()


PINNED = {
    "chains": "21a0226a73e149183199205a774d503ddf6c989a44df70e64ce67b1ce7e6fae3",
    "continuation": "9cb40942acc16a24f3b0de5b7ef11ad39a60aaefd4f2d9a48abce2a476ecacce",
    "continuation_chains": "6a7666ee47781ca6860d5db543ea2fb9f37f8127de22a8e5bcfdca382ae622ac",
    "default": "3ca53a2f3320560680a6a3ec75d658df602efcead6ae1e0d3e8f4f91f3fe93a2",
    "linear_unscaled_penalty": "f686e3791ab51844825074f68ba9a29d2d9eba13d892149e427c0c9af348e062",
    "keep2_step_tau": "f08845c125c87222a1060b556416e6975d0df57a5a63dc93bbe2a53d20950ea4",
    "single": "0f812c724251fd085348bdb9377562b9ccdcaaf558491492597ea5a5479c0766",
    "terminal_no_penalty": "e4adf2ed7389ff7d9ceb3c1f80e92da18d6a4867f8884cc392f2419c1bc4df72",
}


def _one_ulp_up(x: torch.Tensor) -> torch.Tensor:
    return torch.nextafter(x, torch.full_like(x, 9.0))


@pytest.mark.parametrize("case", sorted(CASES))
def test_rollout_is_bitwise_the_recorded_one(case: str) -> None:
    assert rollout_digest(*CASES[case]) == PINNED[case]


def test_the_digest_sees_a_changed_advantage_and_a_changed_draw(monkeypatch) -> None:
    """The digest can fail: one more draw, or an advantage off by one ulp, changes it."""
    import videomem.rl.advantages as advantages_module
    import videomem.rl.rollout as rollout_module

    base = rollout_digest(*CASES["default"])
    select = rollout_module.psp_select

    def extra_draw(*args, generator=None, **kw):
        torch.rand(1, generator=generator)
        return select(*args, generator=generator, **kw)

    monkeypatch.setattr(rollout_module, "psp_select", extra_draw)
    assert rollout_digest(*CASES["default"]) != base
    monkeypatch.setattr(rollout_module, "psp_select", select)
    real = advantages_module.group_advantages
    monkeypatch.setattr(advantages_module, "group_advantages", lambda *a, **k: _one_ulp_up(real(*a, **k)))
    assert rollout_digest(*CASES["default"]) != base
