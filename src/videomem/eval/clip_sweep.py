"""Clip-count generalisation (paper Figure 5): evaluate one policy on synthetic test videos of T clips.

For every T the synthetic generator writes a fresh test split with that many clips (same families,
same oracle, seeds disjoint from training), the greedy memory loop runs on it, and the accuracy of
a_T and the Seg1-N curve are collected into one JSON + Markdown table. The policy was trained at one
T (4 by default); a memory that generalises keeps (or improves) its accuracy as T grows.

Frames are decoded as the policy was trained (the geometry saved beside it), else as the synthetic
data config says (``configs/data/synthetic.yaml``); ``--frame-size`` / ``--frames-per-clip`` override.
The policy runs on the GPU when there is one, in the dtype it trained in (``--device`` / ``--dtype``,
``eval/runtime.py``), decoding as the decode group ``--decode`` says (``configs/decode/``). One process:
the sweep is small (``videos`` x 3 questions per T); ``make eval`` is the one that runs across ranks.

``videomem clips --ckpt DIR [--clips 1 2 ... 8] [--videos 32] [--out DIR] [--decode tiny|paper]``
(``make eval-clips``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from videomem.eval.geometry import data_config_frames, resolve_frames


def clip_sweep(
    policy,
    clip_counts: list[int],
    out_dir: str | Path,
    *,
    videos: int = 32,
    seed: int = 1000,
    frames_per_clip: int | None = None,
    frame_size: tuple[int, int] | None = None,
    batch_size: int = 64,
    gen=None,
) -> dict[int, dict]:
    """Generate a T-clip test split for each T in ``clip_counts`` and evaluate ``policy`` on it.

    ``frames_per_clip`` / ``frame_size``: None takes the synthetic data config's. ``gen``: the decoding
    (a ``GenerationConfig``; None: the tiny decode group's greedy settings).

    Returns:
        ``{T: metrics}`` with the keys of ``evaluate`` (accuracy, seg_accuracy, per_category, ...).
    """
    from videomem.data.shards import expand_shards, iter_shard_videoqa
    from videomem.data.synthetic import generate_dataset
    from videomem.eval.evaluate import evaluate
    from videomem.eval.runtime import decode_settings

    default_size, default_frames = data_config_frames("synthetic")
    frame_size = default_size if frame_size is None else frame_size
    frames_per_clip = default_frames if frames_per_clip is None else frames_per_clip
    out_dir = Path(out_dir)
    results: dict[int, dict] = {}
    for num_clips in clip_counts:
        split_dir = out_dir / f"T{num_clips}"
        if not (split_dir / "test").exists():
            generate_dataset(split_dir, splits={"test": videos}, num_clips=num_clips, seed=seed)
        questions = iter_shard_videoqa(
            expand_shards(split_dir / "test"), frames_per_clip=frames_per_clip, frame_size=frame_size
        )
        metrics, _ = evaluate(
            policy,
            questions,
            batch_size=batch_size,
            gen=gen or decode_settings("tiny"),
            total=videos * 3,
        )
        results[num_clips] = metrics
        print(f"T={num_clips}: accuracy {metrics['accuracy']:.3f}  per family {metrics['per_category']}")
    return results


def markdown(results: dict[int, dict]) -> str:
    """Accuracy of a_T per clip count, and each family's, as a Markdown table."""
    families = sorted({f for m in results.values() for f in m["per_category"]})
    head = (
        "| T | n | accuracy | " + " | ".join(families) + " |\n|---|---|---|" + "---|" * len(families) + "\n"
    )
    rows = [
        f"| {t} | {m['n']} | {m['accuracy']:.3f} | "
        + " | ".join(f"{m['per_category'].get(f, float('nan')):.3f}" for f in families)
        + " |"
        for t, m in sorted(results.items())
    ]
    return head + "\n".join(rows) + "\n"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``videomem clips``."""
    p.add_argument("--ckpt", required=True, help="a saved policy dir")
    p.add_argument("--clips", type=int, nargs="+", default=list(range(1, 9)))
    p.add_argument("--videos", type=int, default=32, help="test videos per T (3 questions each)")
    p.add_argument("--out", default="logs/clips")
    p.add_argument("--data", default="data/synthetic_clips", help="where the T-clip test splits are written")
    p.add_argument(
        "--frame-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="default: as the policy was trained, else the synthetic data config's",
    )
    p.add_argument(
        "--frames-per-clip", type=int, help="default: as the policy was trained, else the data config's"
    )
    p.add_argument("--decode", default="tiny", help="decode group (configs/decode/): tiny, or paper")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    p.add_argument(
        "--dtype",
        default="auto",
        help="auto (on CUDA: as trained, e.g. bfloat16), float32, bfloat16, float16",
    )


def run(a: argparse.Namespace) -> int:
    """``videomem clips``: sweep, then write ``clips.json`` and ``clips.md`` under ``--out``."""
    from videomem.eval.runtime import decode_settings, load_for_eval, resolve_device, resolve_dtype

    if min(a.clips) < 1 or a.videos < 1:
        raise ValueError("--clips and --videos must be >= 1")
    gen = decode_settings(a.decode)
    size, frames = resolve_frames(a.ckpt, a.frame_size, a.frames_per_clip, data_config_frames("synthetic"))
    device = resolve_device(a.device)
    policy = load_for_eval(a.ckpt, device, resolve_dtype(a.dtype, device, a.ckpt))
    print(
        f"policy on {device} in {next(policy.parameters()).dtype}, up to {gen.max_new_tokens} tokens per step"
    )
    results = clip_sweep(
        policy, a.clips, a.data, videos=a.videos, frame_size=size, frames_per_clip=frames, gen=gen
    )
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "clips.json").write_text(json.dumps({str(t): m for t, m in results.items()}, indent=2))
    (out / "clips.md").write_text(markdown(results))
    print(markdown(results))
    print(f"written: {out / 'clips.json'}, {out / 'clips.md'}")
    return 0
