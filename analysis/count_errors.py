"""Where a policy's `count` memories go wrong: by how many objects of the asked colour a clip holds.

Reads one or more eval JSONs (`make eval ... OUT=x.json`, synthetic test split) and the test shards'
metadata (objects per clip, oracle memories). For every `count` question and clip step whose previous
memory matches the oracle's, it classifies the step by n, the number of objects of the asked colour in
that clip, and counts wrong memories: n = 0 wrong is an over-count, n = 1 wrong is mostly a missed
object, n >= 2 wrong means the policy did not add two in one clip. It also splits the final accuracy
by whether the video has a clip with two or more such objects (the generator's `spread_count` makes
those rare: about one `count` question in ten). docs/notes/cold_start.md, "Where the cold start's errors are".

    .venv/bin/python analysis/count_errors.py sft.json prpo.json   # a few seconds
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from videomem.data.shards import expand_shards, iter_samples, read_meta


def load_meta(shards: str) -> dict[str, dict]:
    """video_id -> the shard's metadata (questions with oracle memories, objects with their clip)."""
    return {m["video_id"]: m for m in map(read_meta, iter_samples(expand_shards(shards)))}


def targets_per_clip(meta: dict, colour: str, num_clips: int) -> list[int]:
    """Objects of `colour` in each clip."""
    per = Counter(o["clip"] for o in meta["objects"] if o["colour"] == colour)
    return [per[t] for t in range(num_clips)]


def count_errors(records: list[dict], metas: dict[str, dict]) -> dict:
    """Wrong steps by n (targets in the clip, capped at 2), and final accuracy by multi-target or not."""
    steps, final = Counter(), Counter()
    for r in records:
        if r["category"] != "count":
            continue
        meta = metas[r["video_id"]]
        q = next(q for q in meta["questions"] if q["qid"] == r["qid"])
        gold, pred = q["memories"], r["memories"]
        n_per = targets_per_clip(meta, q["target"], len(gold))
        for t, n in enumerate(n_per):
            if t and pred[t - 1] != gold[t - 1]:
                continue  # judge a step only from a right carried memory
            key = min(n, 2)
            steps[(key, "steps")] += 1
            steps[(key, "wrong")] += pred[t] != gold[t]
        multi = max(n_per) >= 2
        final[(multi, "n")] += 1
        final[(multi, "right")] += r["pred"] == r["answer"]
    return {"steps": steps, "final": final}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("evals", nargs="+", help="eval JSONs of the synthetic test split")
    ap.add_argument("--shards", default="data/synthetic/test")
    args = ap.parse_args()
    metas = load_meta(args.shards)
    print(
        f"{'eval':<28} {'count':>6} | wrong steps n=0 / n=1 / n>=2 | "
        "accuracy: single-target clips / a clip with >= 2"
    )
    for path in args.evals:
        res = count_errors(json.loads(Path(path).read_text())["records"], metas)
        s, f = res["steps"], res["final"]
        n_all = f[(False, "n")] + f[(True, "n")]
        acc = (f[(False, "right")] + f[(True, "right")]) / max(1, n_all)
        wrong = " / ".join(f"{s[(k, 'wrong')]}/{s[(k, 'steps')]}" for k in (0, 1, 2))
        split = " / ".join(f"{f[(m, 'right')]}/{f[(m, 'n')]}" for m in (False, True))
        print(f"{path[-28:]:<28} {acc:>6.3f} | {wrong} | {split}")


if __name__ == "__main__":
    main()
