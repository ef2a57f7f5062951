"""Costs of a PRPO step's pieces at Qwen3-VL-8B's widths with one or two layers, on the CPU or a GPU.

  python scripts/width_bench.py --layers 1 --out w1.json      # CPU: a few minutes, about 5 GB of memory
  python scripts/width_bench.py --layers 2 --out w2.json      # per-layer costs = w2 - w1
  python scripts/width_bench.py --device cuda --layers 2      # a GPU (scripts/gpu_bench.py runs it too)

The model is a random Qwen3-VL with the 8B's widths (text: hidden 4,096, 32 query / 8 KV heads of
128, MLP 12,288, vocabulary 151,936, untied lm_head; vision: hidden 1,152, 16 heads, MLP 4,304, patch
16, merge 2, output 4,096, one deepstack merger) and ``--layers`` text layers over one vision block,
weights in bf16. The clip is the paper's: 32 frames of 256x448 (7,168 patches, 1,792 video tokens).
Each figure is a wall time and the peak memory above the loaded model (CPU: the process's peak
resident memory, reset before each piece; CUDA: ``max_memory_allocated``).

- ``patches``: one clip's frames cut into normalised patches (what the loader workers now do);
- ``vision``: one clip through the vision tower;
- ``prefill``: ``generate`` of one token for 2 prompt rows (vision included);
- ``decode``: 2 prompt rows x G=8 greedy samples whose lengths are forced to spread evenly up to
  ``--new-tokens`` (one long sample per group, the case where the whole batch waits for it): wall time
  of the decode and the sample row-steps the forwards computed;
- ``shared_clip``: the prefill of ``--shared-rows`` prompt rows that show ONE clip (``psp=false``'s
  chains, K kept memories), with the vision encodes counted;
- ``update``: ``group_hidden_states`` forward + backward (a sum of squares of the hidden states: the
  lm_head's loss is the same either way and left out) of one prompt with G=8 completions of n tokens,
  for each ``--completion-tokens`` n, with the mask bytes the shared-prefix layout needs.

It uses only ``Policy``'s public methods, so it also measures an older checkout of the package
(``PYTHONPATH=<old>/src``): docs/performance.md compares the two. Nothing here is a unit test.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import time
from collections.abc import Callable

import torch

WIDTHS_8B = {
    "hidden_size": 4096,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "intermediate_size": 12288,
    "vision_depth": 1,
    "vision_hidden_size": 1152,
    "vision_num_heads": 16,
    "vision_intermediate_size": 4304,
    "vision_patch_size": 16,
    "vision_merge_size": 2,
    "tie_word_embeddings": False,
    "max_position_embeddings": 32768,
}
VOCAB_8B = 151_936
FRAMES, FRAME_SIZE, G = 32, (256, 448), 8
M_MMAP_THRESHOLD = -3  # glibc mallopt parameter


def build(layers: int, device: str, dtype: torch.dtype = torch.bfloat16):
    """The random 8B-width Qwen3-VL policy with ``layers`` text layers."""
    from videomem.model.policy import MODEL_CLASSES, Policy
    from videomem.model.tiny import build_tokenizer, tiny_config

    tokenizer = build_tokenizer()
    config = tiny_config("qwen3_vl", tokenizer, {**WIDTHS_8B, "num_hidden_layers": layers})
    config.text_config.vocab_size = VOCAB_8B  # the real embedding and lm_head; ids stay < len(tokenizer)
    with torch.device(device):
        model = MODEL_CLASSES["qwen3_vl"](config).to(dtype)
    policy = Policy(model.eval(), tokenizer, "qwen3_vl")
    policy.stop_ids = [policy.im_end_id]
    return policy


class Meter:
    """Wall time and peak memory of one piece, above the memory in use when it starts."""

    def __init__(self, device: str) -> None:
        self.device = device
        if device == "cpu":  # every block of 64 KiB or more mmapped and returned when freed, so that the
            # resident size follows the live tensors (glibc would otherwise keep freed memory and hide peaks)
            ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, 64 * 1024)

    def _sync(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()

    def _rss(self, field: str) -> int:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field))

    def __call__(self, fn: Callable) -> tuple[float, float, object]:
        """``(seconds, peak MiB above the start, fn())``; ``cpu_seconds`` keeps the process's CPU time
        of the call (less sensitive than the wall time to other jobs on a shared machine)."""
        self._sync()
        if self.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            start_mem = torch.cuda.memory_allocated()
        else:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # VmHWM := VmRSS
            start_mem = self._rss("VmRSS")
        start, cpu = time.perf_counter(), time.process_time()
        out = fn()
        self._sync()
        seconds, self.cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
        peak = torch.cuda.max_memory_allocated() if self.device == "cuda" else self._rss("VmHWM")
        return seconds, (peak - start_mem) / 2**20, out


def clip_and_messages(policy, rows: int, seed: int = 0):
    """``rows`` prompts of one PRPO clip step (question, options, a ~100-token memory), and a clip."""
    from videomem.memory.prompt import build_messages

    gen = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (FRAMES, *FRAME_SIZE, 3), dtype=torch.uint8, generator=gen)
    memory = "red square at 0:05, then two blue circles; the ring moved left " * 4
    messages = [
        build_messages(
            "How many blue circles appeared?", ["one", "two", "three", "four"], memory * (1 + r % 2), 1, 4
        )
        for r in range(rows)
    ]
    return messages, frames


class ForcedLengths:
    """Greedy samples that end (``<|im_end|>``) after exactly ``lengths[r]`` tokens: an lm_head hook that
    knows which rows a decode forward holds (all of them, or the live ones in order)."""

    def __init__(self, policy, lengths: list[int]) -> None:
        self.policy, self.lengths, self.call = policy, lengths, 0
        self.handle = policy.model.lm_head.register_forward_hook(self)

    def __call__(self, module, args, out):
        k, self.call = self.call, self.call + 1
        if k == 0:  # the prefill: one row per prompt, its samples are not apart yet
            return
        rows = list(range(len(self.lengths)))
        if out.shape[0] != len(rows):  # finished samples left the batch: the live ones, in order
            rows = [r for r in rows if self.lengths[r] >= k]
        assert len(rows) == out.shape[0], (k, len(rows), out.shape)
        for i, r in enumerate(rows):
            if self.lengths[r] == k:
                out[i, -1, self.policy.im_end_id] = 1e4


def measure(args) -> dict:
    from videomem.model.vision import frames_to_patches

    torch.manual_seed(0)
    device, meter = args.device, Meter(args.device)
    policy = build(args.layers, device)
    result = {"layers": args.layers, "device": device, "params": sum(p.numel() for p in policy.parameters())}
    messages, frames = clip_and_messages(policy, 2)
    geometry = {k: getattr(policy, k) for k in ("patch_size", "temporal_patch_size", "merge_size")}

    def cut():
        return frames_to_patches(frames, **geometry, mean=policy.image_mean, std=policy.image_std)

    if not args.update_only:
        result["patches"] = _best(meter, cut, 3)
        patches, grid = cut()
        with torch.inference_mode():
            encode = lambda: policy.model.model.get_video_features(patches.to(device), grid[None].to(device))  # noqa: E731
            result["vision"] = _best(meter, encode, 1) | {"patches": int(patches.shape[0])}

        inputs = policy.build_inputs(messages, [frames, frames.clone()]).to(device)  # 2 distinct clips
        result["prompt_tokens"] = int(inputs.input_ids.shape[1])
        result["prefill"] = _best(meter, lambda: policy.generate(inputs, max_new_tokens=1), 1)

        n = args.new_tokens
        lengths = [max(1, round(n * (g + 1) / G)) for g in range(G)] * 2  # per group: n/8, 2n/8, ..., n
        hook = ForcedLengths(policy, lengths)
        try:
            stats = getattr(policy, "decode_stats", None)
            before = (stats.row_steps, stats.row_steps_saved) if stats else None
            seconds, peak, out = meter(lambda: policy.generate(inputs, num_samples=G, max_new_tokens=n))
        finally:
            hook.handle.remove()
        assert sorted(len(s) for row in out for s in row) == sorted(min(x, n) for x in lengths), (
            "forced lengths"
        )
        decode = {
            "seconds": seconds - result["prefill"]["seconds"],
            "cpu_seconds": meter.cpu_seconds - result["prefill"]["cpu_seconds"],
            "peak_mib": peak,
            "new_tokens": n,
        }
        decode["row_steps_all_rows"] = 2 * G * (n - 1)
        if before:
            decode["row_steps"] = stats.row_steps - before[0]
            decode["row_steps_saved"] = stats.row_steps_saved - before[1]
        result["decode"] = decode

        chains, _ = clip_and_messages(policy, args.shared_rows)
        shared = policy.build_inputs(chains, [frames] * args.shared_rows).to(device)  # one clip object
        encodes_before = policy.decode_stats.vision_encodes if hasattr(policy, "decode_stats") else None
        result["shared_clip"] = _best(meter, lambda: policy.generate(shared, max_new_tokens=1), 1)
        if encodes_before is not None:
            result["shared_clip"]["vision_encodes"] = policy.decode_stats.vision_encodes - encodes_before

    policy.train()
    for p in (policy.model.get_input_embeddings().weight, policy.lm_head_weight):
        p.requires_grad_(False)  # the loss below does not reach the lm_head; the embedding grad is 1.2 GB
    gen = torch.Generator().manual_seed(1)
    result["update"] = []
    for c in args.completion_tokens:
        completions = [[torch.randint(10, 600, (c - 1,), generator=gen).tolist() for _ in range(G)]]

        def step(completions=completions):
            hidden, _, mask = policy.group_hidden_states(messages[:1], [frames], completions)
            (hidden.float().pow(2).sum(-1) * mask).sum().backward()
            policy.zero_grad(set_to_none=True)

        width = policy.build_inputs(messages[:1], [frames]).input_ids.shape[1] + G * c  # prompt + completions
        seconds, peak, _ = meter(step)
        result["update"].append(
            {
                "completion_tokens": c,
                "width": width,
                "seconds": seconds,
                "cpu_seconds": meter.cpu_seconds,
                "peak_mib": peak,
            }
        )
    return result


def _best(meter: Meter, fn: Callable, repeats: int) -> dict:
    """Median wall and CPU time and max peak over ``repeats`` runs (no warm-up: the pieces are long)."""
    runs = [(*meter(fn)[:2], meter.cpu_seconds) for _ in range(repeats)]
    return {
        "seconds": statistics.median(r[0] for r in runs),
        "cpu_seconds": statistics.median(r[2] for r in runs),
        "peak_mib": max(r[1] for r in runs),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--layers", type=int, default=1, help="text layers (1 or 2)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--new-tokens", type=int, default=48, help="decode budget (the longest sample)")
    parser.add_argument("--shared-rows", type=int, default=4, help="prompt rows showing one clip")
    parser.add_argument(
        "--completion-tokens", type=int, nargs="+", default=[64, 256], help="update: n per completion"
    )
    parser.add_argument("--update-only", action="store_true", help="measure the update only")
    parser.add_argument("--out", help="write the figures as JSON")
    args = parser.parse_args(argv)
    result = measure(args)
    print(json.dumps(result, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
