"""GPU figures of docs/performance.md, measured on a ~2B Qwen3-VL-shaped model with random weights in bf16.

  python scripts/gpu_bench.py --out bench.json     # on a CUDA machine (one H100/H200: about 5 minutes)
  python scripts/gpu_bench.py --smoke              # the same code with the tiny model on CPU: a check, no figure

SFT (one optimizer step = one question's T=4 clip steps, 32 frames at 256x448 each, activation
checkpointing on, AdamW): step time, tokens/s, MFU (6 x parameters x tokens / time / peak bf16 FLOP/s,
recomputation not counted) and peak memory, with Liger off, then on (Liger's kernels patch module-level
names of transformers, so "off" runs first). PRPO (2 questions, T=4, G=8, psp=true vs psp=false): the
step split into rollout (shared-prefill sampling of ``--new-tokens`` tokens; random weights never stop
early, so every sample has that length) and update (fused GRPO loss, micro-batches of 4, every sample
given advantage +-1 so the update is never empty).

The engine's pieces at Qwen3-VL-8B's widths with two layers (``scripts/width_bench.py``, the same
code the CPU figures of docs/performance.md come from): vision per clip, prefill, decode with finished
samples leaving the batch, a clip shared by 8 prompt rows, the packed update at 256 and 1,280 tokens per
completion; under ``"width_8b"`` in the JSON.

Without CUDA (and without ``--smoke``) it says that nothing was measured and exits 0. Nothing here is
a unit test; ``tests/perf/test_bench_gpu.py`` runs it on a GPU and ``tests/test_scale_bench.py`` runs
``--smoke``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import torch

from videomem.data.types import VideoQA
from videomem.memory.loop import step_messages
from videomem.memory.prompt import format_target
from videomem.model.liger import apply_liger_kernels
from videomem.model.policy import MODEL_CLASSES, Policy
from videomem.model.tiny import build_tokenizer, tiny_config

# Qwen3-VL-2B's shape (text 2048 x 28 layers, GQA 16/8, MLP 6144, vocab 151,936, tied embeddings;
# vision 1024 x 24 blocks): about 2.0B parameters.
SHAPE_2B = {
    "hidden_size": 2048,
    "num_hidden_layers": 28,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "intermediate_size": 6144,
    "vision_depth": 24,
    "vision_hidden_size": 1024,
    "vision_num_heads": 16,
    "vision_intermediate_size": 4096,
    "tie_word_embeddings": True,
    "max_position_embeddings": 32768,
}
VOCAB_2B = 151_936
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense bf16 FLOP/s (SXM)


def build_bench_policy(smoke: bool, device: str, liger: bool) -> Policy:
    """Random-weight Qwen3-VL policy: the 2B shape in bf16, or the tiny one in fp32 for --smoke."""
    tokenizer = build_tokenizer()
    config = tiny_config("qwen3_vl", tokenizer, None if smoke else SHAPE_2B)
    if not smoke:
        # the real lm_head / embedding cost; the token ids used stay below len(tokenizer)
        config.text_config.vocab_size = VOCAB_2B
        config.vision_config.deepstack_visual_indexes = [5, 11, 17]
    dtype = torch.float32 if smoke else torch.bfloat16
    with torch.device(device):
        model = MODEL_CLASSES["qwen3_vl"](config).to(dtype)
    policy = Policy(model, tokenizer, "qwen3_vl")
    if liger:
        # warns (and patches nothing) where liger-kernel does not support this transformers version
        apply_liger_kernels(policy.model, "qwen3_vl", required=False)
        policy.liger_kernels = True
    return policy


def fake_question(frames: int, size: tuple[int, int], clips: int = 4) -> VideoQA:
    video = [torch.randint(0, 256, (frames, *size, 3), dtype=torch.uint8) for _ in range(clips)]
    memories = ["red square at 0:05, then two blue circles; the ring moved left " * 4] * clips  # ~100 tokens
    return VideoQA(
        video_id="bench",
        qid="q0",
        question="How many blue circles appeared?",
        options=["one", "two", "three", "four"],
        answer="B",
        category="count",
        clips=video,
        spans=[(15.0 * t, 15.0 * (t + 1)) for t in range(clips)],
        memories=memories,
    )


def param_count(policy: Policy) -> int:
    return sum(p.numel() for p in policy.parameters())


def peak_flops(device: str) -> float | None:
    if device != "cuda":
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def bench_sft(policy: Policy, qa: VideoQA, device: str, steps: int, warmup: int) -> dict:
    """One question's T clip steps per optimizer step; figures are medians over ``steps``."""
    from videomem.train.sft import sft_loss

    policy.train()
    policy.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    messages = [step_messages(qa, t, qa.memories[t - 1] if t else "") for t in range(qa.num_clips)]
    targets = [format_target(qa.memories[t], qa.answer) for t in range(qa.num_clips)]
    inputs = policy.build_inputs(messages, qa.clips, completions=targets).to(device)
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-5)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(warmup + steps):
        _sync(device)
        t0 = time.perf_counter()
        loss = sft_loss(policy, inputs)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    step = statistics.median(times)
    tokens = int(inputs.attention_mask.sum())
    out = {
        "step_s": step,
        "tokens_per_step": tokens,
        "tokens_per_s": tokens / step,
        "params": param_count(policy),
    }
    peak = peak_flops(device)
    out["mfu"] = 6 * out["params"] * tokens / step / peak if peak else None
    out["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
    policy.model.gradient_checkpointing_disable()
    return out


def bench_prpo(
    policy: Policy,
    qa: VideoQA,
    device: str,
    psp: bool,
    questions: int,
    group: int,
    new_tokens: int,
    steps: int,
) -> dict:
    """Rollout and update time of PRPO steps on ``questions`` copies of ``qa`` (T=4, G=``group``)."""
    from videomem.train.prpo import PRPOModule

    module = PRPOModule(
        policy=lambda: policy,
        optimizer=partial(torch.optim.AdamW, lr=1e-6),
        micro_batch_size=4,
        rollout={"group_size": group, "psp": psp, "max_new_tokens": new_tokens},
        use_liger=True,
    )
    module.configure_model()
    module.to(device)
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-6)
    rollout_s, update_s, samples = [], [], 0
    for _ in range(steps):
        _sync(device)
        t0 = time.perf_counter()
        rollout = module.rollout([qa] * questions)
        _sync(device)
        t1 = time.perf_counter()
        for i, s in enumerate(rollout.samples):
            s.advantage = 1.0 if i % 2 == 0 else -1.0
        num_tokens = float(sum(policy.count_tokens(s.completion) + 1 for s in rollout.samples))
        for c in range(0, len(rollout.samples), 4):
            loss, _ = module._micro_loss(rollout.samples[c : c + 4], num_tokens, weight=1.0)
            loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync(device)
        rollout_s.append(t1 - t0)
        update_s.append(time.perf_counter() - t1)
        samples = len(rollout.samples)
    r, u = statistics.median(rollout_s), statistics.median(update_s)
    return {
        "psp": psp,
        "group_size": group,
        "questions": questions,
        "new_tokens": new_tokens,
        "rollout_s": r,
        "update_s": u,
        "step_s": r + u,
        "samples_per_step": samples,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--smoke", action="store_true", help="tiny model on CPU: checks the code, measures nothing"
    )
    parser.add_argument("--steps", type=int, default=5, help="measured steps (median)")
    parser.add_argument("--new-tokens", type=int, default=256, help="PRPO rollout tokens per sample")
    parser.add_argument("--out", help="write the figures as JSON")
    args = parser.parse_args(argv)
    if not args.smoke and not torch.cuda.is_available():
        print("no CUDA device: nothing measured (docs/performance.md lists these figures as pending)")
        return 0
    device = "cpu" if args.smoke else "cuda"
    frames, size = (2, (32, 32)) if args.smoke else (32, (256, 448))
    steps, warmup = (1, 0) if args.smoke else (args.steps, 2)
    questions, group, new_tokens = (1, 2, 4) if args.smoke else (2, 8, args.new_tokens)
    qa = fake_question(frames, size)
    result: dict = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu (smoke)", "sft": {}}
    for liger in (False, True):
        if liger and device != "cuda":
            result["sft"]["liger"] = "skipped: Liger's Triton kernels need CUDA"
            continue
        policy = build_bench_policy(args.smoke, device, liger)
        result["sft"]["liger" if liger else "plain"] = bench_sft(policy, qa, device, steps, warmup)
        del policy
        if device == "cuda":
            torch.cuda.empty_cache()
    policy = build_bench_policy(args.smoke, device, liger=False)
    result["prpo"] = [
        bench_prpo(policy, qa, device, psp, questions, group, new_tokens, max(1, steps // 2))
        for psp in (True, False)
    ]
    del policy
    if device == "cuda":
        torch.cuda.empty_cache()
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from width_bench import measure

        widths = argparse.Namespace(
            layers=2,
            device="cuda",
            new_tokens=args.new_tokens,
            completion_tokens=[256, 1280],
            shared_rows=8,
            update_only=False,
        )
        result["width_8b"] = measure(widths)
    print(json.dumps(result, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
