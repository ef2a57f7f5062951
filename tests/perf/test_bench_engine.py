"""Benchmarks of the rollout engine and the update at the work they no longer do.

- ``decode_row_steps_saved_fraction`` and ``decode_time_ratio_vs_all_rows``: 2 prompts x G=8 greedy
  samples whose lengths spread evenly up to 48 tokens (one long sample per group), on the ~25M
  Qwen2.5-VL of ``test_bench_generate`` given Qwen's 151,936-token vocabulary (so that, as at the real
  widths, a step costs in proportion to its rows): the share of sample row-steps the engine no longer computes,
  and the CPU time of the engine that decoded every row until the last finished
  (``tests/reference_decoding.py``) over today's, alternating in this process (median of 3).
- ``update_mask_bytes_ratio_paper_shape``: the attention mask the shared-prefix update holds at the
  paper's shape (a 3.3k-token prompt, G=8 completions of 1,280 tokens: W = 13.5k): the dense
  ``[W, W]`` boolean (plus its identity) it used to build over the largest mask the packed layout
  materialises on the CPU (one completion's ``[n, L_p + n]`` bias; 0 on CUDA).
- ``update_attention_*``: one layer's attention of the update (8 heads of 64 over 2 KV heads, a
  300-token prompt, completions of 800 tokens), forward + backward, packed against the dense
  ``[W, W]`` mask it replaces: the packed peak memory when W doubles by doubling the completions
  G = 8 -> 16 (about 2: linear in W; a dense mask gives about 4), and dense over packed peak memory
  and time at G = 8 (W = 6.7k).
- ``rollout_vision_encodes_per_clip``: a ``psp=false`` rollout with ``answer_target=continuation``
  (8 chains and their greedy continuations show every clip): vision encodes per clip.

Reported as BENCH lines, never asserted. ``make bench`` or
``.venv/bin/python -m pytest tests/perf/test_bench_engine.py -m perf -s -q``.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.perf.bench import bench_line
from tests.perf.test_bench_generate import TINY, clip_prompt
from tests.reference_decoding import reference_generate

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from width_bench import ForcedLengths, Meter  # noqa: E402

G, NEW_TOKENS, REPEATS = 8, 48, 3


@pytest.mark.perf
def test_bench_decode_leaves_finished_samples_out() -> None:
    from videomem.model.policy import build_policy

    torch.set_num_threads(1)
    policy = build_policy("qwen2_5_vl", tiny=TINY, liger_kernels=False)
    _real_vocabulary(policy)
    messages, frames = clip_prompt(policy, 8)
    inputs = policy.build_inputs([messages, messages], [frames, frames.clone()])
    lengths = [round(NEW_TOKENS * (g + 1) / G) for g in range(G)] * 2

    def run(engine) -> float:
        hook = ForcedLengths(policy, lengths)
        try:
            start = time.process_time()  # CPU time of one thread: steadier than wall time on a shared machine
            out = engine(policy, inputs, num_samples=G, max_new_tokens=NEW_TOKENS)
            seconds = time.process_time() - start
        finally:
            hook.handle.remove()
        assert sorted(len(s) for row in out for s in row) == sorted(lengths)
        return seconds

    from videomem.model.generation import generate

    run(generate)  # warm-up
    stats = policy.decode_stats
    computed, saved = stats.row_steps, stats.row_steps_saved
    times = {"all rows": [], "live rows": []}
    for _ in range(REPEATS):
        times["all rows"].append(run(reference_generate))
        times["live rows"].append(run(generate))
    fraction = (stats.row_steps_saved - saved) / (stats.row_steps - computed + stats.row_steps_saved - saved)
    ratio = statistics.median(times["all rows"]) / statistics.median(times["live rows"])
    print(f"\ndecode 2 x G={G}, lengths spread to {NEW_TOKENS}: {times}")
    bench_line("decode_row_steps_saved_fraction", fraction, ">=", 0.4)
    bench_line("decode_time_ratio_vs_all_rows", ratio, ">=", 1.3)


def _real_vocabulary(policy) -> None:
    """Give the ~25M model Qwen's 151,936-row embedding and lm_head (random; the tokenizer's ids stay
    below its own size), so that a decode step costs what its rows cost, as at the real widths."""
    from torch import nn

    model = policy.model
    hidden = model.config.text_config.hidden_size
    model.model.language_model.embed_tokens = nn.Embedding(151_936, hidden)
    model.lm_head = nn.Linear(hidden, 151_936, bias=False)
    model.config.text_config.vocab_size = 151_936


@pytest.mark.perf
def test_bench_update_mask_memory_is_linear_in_width() -> None:
    from videomem.model.packed import PackedLayout

    prompt, n = 3300, 1280
    layout = PackedLayout([0], prompt, [[(prompt + g * n, n) for g in range(G)]])
    width = prompt + G * n
    dense = 2 * width * width  # [1, W, W] booleans + the [W, W] identity
    bench_line("update_mask_bytes_ratio_paper_shape", dense / layout.mask_bytes(), ">=", 10)

    torch.set_num_threads(1)
    meter, heads, kv_heads, dim, prompt = Meter("cpu"), 8, 2, 64, 300

    class Layer:
        layer_idx = 0

    def attention(n: int, packed: bool, group: int = G):
        width = prompt + group * n
        q = torch.randn(1, heads, width, dim, requires_grad=True)
        k = torch.randn(1, kv_heads, width, dim, requires_grad=True)
        v = torch.randn(1, kv_heads, width, dim, requires_grad=True)
        if packed:
            layout = PackedLayout([0], prompt, [[(prompt + g * n, n) for g in range(group)]])
            out = layout.attend(Layer, q, k, v, None, scaling=dim**-0.5)[0]
        else:  # the dense [W, W] mask the update used to build
            seen = torch.zeros(1, width, width, dtype=torch.bool)
            seen[0, :prompt, :prompt] = torch.ones(prompt, prompt, dtype=torch.bool).tril()
            for g in range(G):
                at = prompt + g * n
                seen[0, at : at + n, :prompt] = True
                seen[0, at : at + n, at : at + n] = torch.ones(n, n, dtype=torch.bool).tril()
            out = torch.nn.functional.scaled_dot_product_attention(
                q, k, v, attn_mask=seen[:, None], enable_gqa=True
            )
        out.sum().backward()

    def measured(fn) -> tuple[float, float]:
        fn()  # warm-up: one-time allocations are not the attention's
        return meter(fn)[:2]

    lengths = (400, 800, 1600)
    packed = {n: measured(lambda n=n: attention(n, True)) for n in lengths}
    # before the dense runs: after their GB-sized masks the resident size no longer follows the packed
    # run's tensors alone (measured after them, G 8 -> 16 read 2.6-3.1x; alone, 1.94-2.0x per doubling)
    doubled = measured(lambda: attention(800, True, 2 * G))
    dense = {n: measured(lambda n=n: attention(n, False)) for n in lengths}
    print(f"\none layer's attention, G={G} completions of n tokens, forward + backward (seconds, peak MiB):")
    for n in lengths:
        print(f"  n={n} W={prompt + G * n}: packed {packed[n]}, dense {dense[n]}")
    print(f"  G={2 * G}, n=800: packed {doubled}")
    bench_line("update_attention_peak_growth_2x_completions", doubled[1] / packed[800][1], "<=", 2.5)
    bench_line("update_attention_dense_over_packed_peak_W6700", dense[800][1] / packed[800][1], ">=", 1.3)
    bench_line("update_attention_dense_over_packed_time_W6700", dense[800][0] / packed[800][0], ">=", 2)
    bench_line("update_attention_dense_over_packed_peak_W13100", dense[1600][1] / packed[1600][1], ">=", 2)


@pytest.mark.perf
def test_bench_rollout_encodes_each_clip_once() -> None:
    from tests.test_memory_loop import pixel_qa
    from videomem.model.policy import build_policy
    from videomem.rl.rewards import RewardConfig
    from videomem.rl.rollout import RolloutConfig, prpo_rollout

    policy = build_policy("qwen2_5_vl", tiny={"hidden_size": 64, "num_hidden_layers": 2}).eval()
    g = torch.Generator().manual_seed(0)
    qas = [pixel_qa(i, 4, 2 * policy.patch_multiple, g) for i in range(2)]
    cfg = RolloutConfig(group_size=G, psp=False, max_new_tokens=8)
    rows = policy.decode_stats.prompt_rows
    rollout = prpo_rollout(
        policy,
        qas,
        cfg,
        RewardConfig(answer_target="continuation"),
        generator=torch.Generator().manual_seed(1),
    )
    clips = sum(qa.num_clips for qa in qas)
    print(
        f"\nrollout psp=false G={G}: {policy.decode_stats.prompt_rows - rows} prompt rows over {clips} clips"
    )
    bench_line("rollout_vision_encodes_per_clip", rollout.stats["decode/vision_encodes_per_clip"], "<=", 1.0)
