"""Benchmark: one clip step of G=8 samples from ONE shared prefill vs the G prompts prefilled in a batch.

The shape of a PRPO rollout step (method.md section 3): one prompt of ~2,000 video tokens (the paper's
per-clip budget: 32 frames, 128 merged tokens per frame pair) plus the step text (instruction,
question, options, a carried memory), G=8 samples of exactly 32 new tokens, a ~25M-parameter
Qwen2.5-VL-shaped random model, float32, one CPU thread.

- Arm A (PSP): ``policy.generate(prompt, num_samples=8)``: vision tower and prefill once, 8 samples.
- Arm B (independent chains, what ``psp=false`` costs): the prompt repeated 8 times in the batch,
  ``num_samples=1``.

Both arms sample (temperature 1) with the stop tokens switched off, so every sequence decodes the full
budget. The arms alternate in THIS process (the machine is shared, so only the ratio is comparable);
each figure is the median of 3 after one warm-up. The prefill/decode split comes from hooks on the HF
model: "prefill" is everything up to the end of its first forward (rope index, vision tower, prefill),
"decode" the rest. Reported as BENCH lines, never asserted (perf figures are not unit tests).

Run: ``make bench`` or ``.venv/bin/python -m pytest tests/perf/test_bench_generate.py -m perf -s -q``.
"""

from __future__ import annotations

import statistics
import time

import pytest
import torch

from tests.perf.bench import bench_line

G, NEW_TOKENS, FRAMES, REPEATS = 8, 32, 32, 3
# ~24.6M parameters: text 512 x 6 layers (8 heads, 2 KV heads, MLP 2048), a small vision tower.
TINY = {
    "hidden_size": 512,
    "num_hidden_layers": 6,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "intermediate_size": 2048,
    "vision_depth": 2,
    "vision_hidden_size": 128,
    "vision_num_heads": 4,
    "vision_intermediate_size": 256,
}
GRID_HW = (8, 16)  # merged tokens per frame pair: 8 x 16 = 128
MEMORY = (
    "Clip 1: a red circle enters from the left and stops at the centre; two blue squares appear at the "
    "top right and move down. Clip 2: the circle turns green, a small yellow star crosses from right to "
    "left, one blue square leaves. Count so far: red objects 1, blue squares 2, stars 1."
)


class _Split:
    """Times one ``generate``: start -> end of the model's first forward (prefill), then the rest (decode)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.first_end: float | None = None
        self.handle = model.register_forward_hook(self._hook)

    def _hook(self, *_) -> None:
        if self.first_end is None:
            self.first_end = time.perf_counter()

    def run(self, fn) -> tuple[float, float, list]:
        self.first_end = None
        start = time.perf_counter()
        out = fn()
        end = time.perf_counter()
        return self.first_end - start, end - self.first_end, out


def clip_prompt(policy, num_frames: int) -> tuple[list[dict], torch.Tensor]:
    """One PRPO clip step's messages (question, options, carried memory) and ``num_frames`` random frames
    of GRID_HW merged tokens per frame pair."""
    from videomem.memory.prompt import build_messages

    m = policy.patch_multiple
    gen = torch.Generator().manual_seed(0)
    frames = torch.randint(
        0, 256, (num_frames, GRID_HW[0] * m, GRID_HW[1] * m, 3), dtype=torch.uint8, generator=gen
    )
    messages = build_messages(
        "How many red objects appear in the whole video?",
        ["one", "two", "three", "four"],
        MEMORY,
        clip_index=2,
        num_clips=8,
        span=(30.0, 45.0),
    )
    return messages, frames


def _setup():
    from videomem.model.policy import build_policy
    from videomem.model.vision import num_video_tokens

    policy = build_policy("qwen2_5_vl", tiny=TINY, liger_kernels=False)
    policy.stop_ids = []  # both arms decode exactly NEW_TOKENS per sequence
    messages, frames = clip_prompt(policy, FRAMES)
    shared = policy.build_inputs([messages], [frames])
    batched = policy.build_inputs([messages] * G, [frames] * G)
    video_tokens = num_video_tokens(shared.video_grid_thw[0], policy.merge_size)
    return policy, shared, batched, video_tokens


@pytest.mark.perf
def test_bench_generate_shared_prefix_speedup() -> None:
    torch.set_num_threads(1)
    policy, shared, batched, video_tokens = _setup()
    params = sum(p.numel() for p in policy.parameters())
    gen = torch.Generator().manual_seed(0)
    split = _Split(policy.model)

    def arm(inputs, samples, new_tokens=NEW_TOKENS):
        return lambda: policy.generate(
            inputs, num_samples=samples, max_new_tokens=new_tokens, do_sample=True, generator=gen
        )

    try:
        split.run(arm(shared, G, 2))  # warm-up: allocator pools, lazy inits
        split.run(arm(batched, 1, 2))
        times = {"A": [], "B": []}
        for _ in range(REPEATS):
            for name, inputs, samples in (("A", shared, G), ("B", batched, 1)):
                prefill, decode, out = split.run(arm(inputs, samples))
                assert (
                    sum(len(s) == NEW_TOKENS for row in out for s in row) == G
                )  # a sanity check, not a timing
                times[name].append((prefill + decode, prefill, decode))
    finally:
        split.handle.remove()
    med = {k: [statistics.median(t[i] for t in v) for i in range(3)] for k, v in times.items()}
    (ta, pa, da), (tb, pb, db) = med["A"], med["B"]
    print(
        f"\ngenerate G={G}: {params / 1e6:.1f}M params, prompt {shared.input_ids.shape[1]} tokens "
        f"({video_tokens} video), {NEW_TOKENS} new tokens, median of {REPEATS}: "
        f"shared prefix {ta:.2f}s (prefill {pa:.2f} + decode {da:.2f}), "
        f"batched prompts {tb:.2f}s (prefill {pb:.2f} + decode {db:.2f}); decode ratio B/A {db / da:.2f}"
    )
    bench_line(f"generate_shared_prefix_speedup_G{G}", tb / ta, ">=", 3.1)
