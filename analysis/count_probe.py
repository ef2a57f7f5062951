"""Does a policy ever write the right count where one clip holds two objects of the asked colour?

For each `count` question with a clip that adds two or more to the oracle count, this feeds the policy
that clip with the oracle memory of the clip before and the oracle output up to the count's digit
(teacher forcing), and reads the policy's distribution over the digits 0-4 there. It reports the mean
probability of the right count and of "one more than before" (the single-object habit), how often the
right count is the argmax (what greedy evaluation writes), and the chance that G samples hold it at
least once (so that the group can reward it). `--min-added 1 --max-added 1` reads the one-object clips
instead, where "two more" is the error. Comparing a cold start with its PRPO policy shows whether RL
raised or lowered the right count there (docs/notes/prpo_tuning.md).

    .venv/bin/python analysis/count_probe.py --ckpt logs/sft/latest   # ~10 s (one-object clips: ~1 min)
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Iterator

import torch

from videomem.data.shards import iter_shard_videoqa
from videomem.data.types import VideoQA
from videomem.memory.loop import step_messages
from videomem.memory.prompt import format_target
from videomem.model.policy import Policy


def _count(memory: str) -> int:
    return int(memory.rsplit(":", 1)[1])


def clips_adding(
    qas: Iterable[VideoQA], min_added: int = 2, max_added: int = 4
) -> Iterator[tuple[VideoQA, int, int, int]]:
    """(question, clip, count before it, count after it) for each `count` clip adding ``min_added``
    to ``max_added`` objects of the asked colour."""
    for qa in qas:
        if qa.category != "count" or not qa.memories:
            continue
        before = 0
        for t, memory in enumerate(qa.memories):
            after = _count(memory)
            if min_added <= after - before <= max_added:
                yield qa, t, before, after
            before = after


@torch.inference_mode()
def digit_distribution(policy: Policy, qa: VideoQA, t: int, after: int) -> torch.Tensor:
    """p over the digits 0-4 where the policy writes the count of clip ``t`` (oracle memory before it)."""
    prefix = qa.memories[t].rsplit(":", 1)[0]
    options = [policy._encode(format_target(f"{prefix}: {d}", "A")) for d in range(5)]
    pos = next(i for i in range(len(options[0])) if len({tuple(o[: i + 1]) for o in options}) > 1)
    messages = step_messages(qa, t, qa.memories[t - 1] if t else "", policy.system_prompt)
    inputs = policy.build_inputs([messages], [qa.clips[t]], [options[after]])
    logits = policy(inputs).logits[0]  # [L, V]
    start = inputs.input_ids.shape[1] - (len(options[after]) + 1)  # completion + <|im_end|>
    return torch.softmax(logits[start + pos - 1].float(), -1)[[o[pos] for o in options]]  # [5]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ckpt", default="logs/sft/latest")
    parser.add_argument("--shards", default="data/synthetic/test")
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument(
        "--min-added", type=int, default=2, help="1 (with --max-added 1): the one-object clips"
    )
    parser.add_argument("--max-added", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(1)
    policy = Policy.from_pretrained(args.ckpt).eval()
    qas = iter_shard_videoqa(args.shards, frames_per_clip=8, frame_size=(56, 56))
    rows = [
        (before, after, digit_distribution(policy, qa, t, after))
        for qa, t, before, after in clips_adding(qas, args.min_added, args.max_added)
    ]
    if not rows:
        raise SystemExit("no clip adds that many objects of the asked colour")
    gold = torch.stack([p[after] for _, after, p in rows])
    one_more = torch.stack([p[before + 1] for before, _, p in rows])
    two_more = torch.stack([p[before + 2] if before + 2 <= 4 else p.new_zeros(()) for before, _, p in rows])
    argmax = sum(int(p.argmax()) == after for _, after, p in rows)
    drawn = (1 - (1 - gold) ** args.group_size).mean()
    print(
        f"{args.ckpt}: {len(rows)} clips adding {args.min_added}-{args.max_added} | p(right count) {gold.mean():.3f} | "
        f"p(one more) {one_more.mean():.3f} | p(two more) {two_more.mean():.3f} | argmax right {argmax}/{len(rows)} | "
        f"P(right count among G={args.group_size} samples) {drawn:.3f}"
    )


if __name__ == "__main__":
    main()
