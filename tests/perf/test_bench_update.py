"""Benchmark: PRPO's policy update over one PSP group, the prompt run once vs once per sample.

The update's shape after a rollout step (method.md section 3): one clip prompt (instruction, question,
options, carried memory and a clip of FRAMES frames, 128 merged tokens per frame pair), G=8 sampled
completions of 32 tokens, the ~25M-parameter Qwen2.5-VL-shaped model of ``test_bench_generate``,
float32, one CPU thread; forward + backward of the clipped-surrogate loss (plain-torch reference).

- Arm A (``module.shared_prefix_update=true``, the default): ``Policy.group_hidden_states`` packs the
  prompt once and the 8 completions behind it (4-D mask, each completion sees the prompt and itself),
  so the vision tower and the prompt's layers run once.
- Arm B (``false``): 8 rows of prompt + completion, the vision tower and the prompt 8 times.

The loss and gradients are the same (tests/test_prpo_update.py). The arms alternate in THIS process
(only the ratio is comparable on a shared machine); each figure is the median of 3 after a warm-up.
Reported as a BENCH line, never asserted.

Run: ``make bench`` or ``.venv/bin/python -m pytest tests/perf/test_bench_update.py -m perf -s -q``.
"""

from __future__ import annotations

import statistics
import time

import pytest
import torch

from tests.perf.bench import bench_line
from tests.perf.test_bench_generate import TINY, clip_prompt

G, NEW_TOKENS, FRAMES, REPEATS = 8, 32, 16, 3


def _setup():
    from videomem.model.policy import build_policy
    from videomem.model.vision import num_video_tokens

    policy = build_policy("qwen2_5_vl", tiny=TINY, liger_kernels=False)
    messages, frames = clip_prompt(policy, FRAMES)
    gen = torch.Generator().manual_seed(1)
    vocab = policy.lm_head_weight.shape[0]
    completions = [torch.randint(10, vocab - 10, (NEW_TOKENS - 1,), generator=gen).tolist() for _ in range(G)]
    grid = policy.build_inputs([messages], [frames]).video_grid_thw[0]
    video_tokens = int(num_video_tokens(grid, policy.merge_size))
    advantages = torch.linspace(-1.5, 1.5, G)
    return policy, messages, frames, completions, advantages, video_tokens


@pytest.mark.perf
def test_bench_update_shared_prefix_speedup() -> None:
    from videomem.rl.loss import naive_grpo_loss

    torch.set_num_threads(1)
    policy, messages, frames, completions, advantages, video_tokens = _setup()
    policy.train()

    def shared() -> None:
        hidden, targets, mask = policy.group_hidden_states([messages], [frames], [completions])
        naive_grpo_loss(hidden, policy.lm_head_weight, targets, mask, advantages)[0].backward()

    def plain() -> None:
        inputs = policy.build_inputs([messages] * G, [frames] * G, completions=completions)
        hidden = policy.hidden_states(inputs)[:, :-1]
        mask = (inputs.labels[:, 1:] != -100).float()
        targets = inputs.input_ids[:, 1:]
        naive_grpo_loss(hidden, policy.lm_head_weight, targets, mask, advantages)[0].backward()

    def timed(fn) -> float:
        policy.zero_grad(set_to_none=True)
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    timed(shared)  # warm-up
    times = {"A": [], "B": []}
    for _ in range(REPEATS):
        times["A"].append(timed(shared))
        times["B"].append(timed(plain))
    ta, tb = statistics.median(times["A"]), statistics.median(times["B"])
    prompt = policy.build_inputs([messages], [frames]).input_ids.shape[1]
    print(
        f"\nupdate G={G}: prompt {prompt} tokens ({video_tokens} video), {NEW_TOKENS} tokens per completion, "
        f"forward + backward, median of {REPEATS}: shared prefix {ta:.2f}s, one row per sample {tb:.2f}s"
    )
    bench_line(f"update_shared_prefix_speedup_G{G}", tb / ta, ">=", 4.0)
