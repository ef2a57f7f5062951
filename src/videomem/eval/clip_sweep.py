"""Clip-count generalisation (paper Figure 5): evaluate one policy on synthetic test videos of T clips.

For every T the synthetic generator writes a fresh test split with that many clips (same families,
same oracle, seeds disjoint from training), the greedy memory loop runs on it, and the accuracy of
a_T and the Seg1-N curve are collected into one JSON + Markdown table. The policy was trained at one
T (4 by default); a memory that generalises keeps (or improves) its accuracy as T grows.

``videomem clips --ckpt DIR [--clips 1 2 ... 8] [--videos 32] [--out DIR]`` (``make eval-clips``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from videomem.data.shards import expand_shards, iter_shard_videoqa
from videomem.data.synthetic import generate_dataset
from videomem.eval.evaluate import evaluate
from videomem.memory.loop import GenerationConfig
from videomem.model.policy import Policy


def clip_sweep(
    policy,
    clip_counts: list[int],
    out_dir: str | Path,
    *,
    videos: int = 32,
    seed: int = 1000,
    frames_per_clip: int = 8,
    frame_size: tuple[int, int] = (56, 56),
    batch_size: int = 64,
    max_new_tokens: int = 48,
) -> dict[int, dict]:
    """Generate a T-clip test split for each T in ``clip_counts`` and evaluate ``policy`` on it.

    Returns:
        ``{T: metrics}`` with the keys of ``evaluate`` (accuracy, seg_accuracy, per_category, ...).
    """
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
            gen=GenerationConfig(max_new_tokens=max_new_tokens),
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="videomem clips", description=__doc__.split("\n")[0])
    p.add_argument("--ckpt", required=True, help="a saved policy dir")
    p.add_argument("--clips", type=int, nargs="+", default=list(range(1, 9)))
    p.add_argument("--videos", type=int, default=32, help="test videos per T (3 questions each)")
    p.add_argument("--out", default="logs/clips")
    p.add_argument("--data", default="data/synthetic_clips", help="where the T-clip test splits are written")
    p.add_argument("--frame-size", type=int, nargs=2, default=[56, 56])
    a = p.parse_args(argv)
    policy = Policy.from_pretrained(a.ckpt).eval()
    results = clip_sweep(policy, a.clips, a.data, videos=a.videos, frame_size=tuple(a.frame_size))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "clips.json").write_text(json.dumps({str(t): m for t, m in results.items()}, indent=2))
    (out / "clips.md").write_text(markdown(results))
    print(markdown(results))
    print(f"written: {out / 'clips.json'}, {out / 'clips.md'}")
    return 0
