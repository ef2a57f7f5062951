"""Benchmark: one clip step, G samples from one shared prefill vs G copies of each prompt prefilled in a batch.

Run with ``pytest tests/test_model_generate_perf.py -m perf -s``; prints the timings. One CPU thread so
that other jobs on a shared machine disturb it less; every sequence decodes the full budget.
"""

from __future__ import annotations

import time

import pytest
import torch

from videomem.model.policy import build_policy

pytestmark = pytest.mark.perf

B, G, NEW_TOKENS = 4, 8, 32
QUESTION = (
    "Clip 2 of 4 (0:15-0:30).\nQuestion: What colour was the large shape when it first appeared?\n"
    "Options:\nA. red\nB. green\nC. blue\nD. yellow\n"
    "Memory: a red circle moved left, then two blue squares appeared at the top right.\n"
    "Update the memory and answer."
)


def best_of(fn, repeats: int = 3) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


@pytest.mark.parametrize("arch", ["qwen2_5_vl", "qwen3_vl"])
def test_shared_prefill_is_faster_than_batched_prefill(arch):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        policy = build_policy(arch)
        policy.stop_ids = []  # decode all NEW_TOKENS in both runs
        side = 4 * policy.patch_multiple  # 112 or 128: 4 merged tokens per frame pair row and column
        gen = torch.Generator().manual_seed(0)
        videos = [
            torch.randint(0, 256, (8, side, side, 3), dtype=torch.uint8, generator=gen) for _ in range(B)
        ]
        messages = [
            [
                {"role": "system", "content": "Keep a short memory and answer with tags."},
                {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": QUESTION}]},
            ]
        ] * B
        shared = policy.build_inputs(messages, videos)
        batched = policy.build_inputs(
            [m for m in messages for _ in range(G)], [v for v in videos for _ in range(G)]
        )

        def run(inputs, samples):
            return lambda: policy.generate(
                inputs, num_samples=samples, max_new_tokens=NEW_TOKENS, do_sample=True, generator=gen
            )

        t_shared, t_batched = best_of(run(shared, G)), best_of(run(batched, 1))
        t_prefill = best_of(lambda: policy.generate(shared, max_new_tokens=1))
    finally:
        torch.set_num_threads(threads)
    print(
        f"\n{arch}: prompt {shared.input_ids.shape[1]} tokens, B={B} G={G} new={NEW_TOKENS}: "
        f"shared {t_shared:.3f}s, batched {t_batched:.3f}s ({t_batched / t_shared:.2f}x); "
        f"shared prefill alone {t_prefill:.3f}s"
    )
    assert t_batched / t_shared > 1.5
