"""Perception probe: can the tiny vision tower learn the shape of the object of the asked colour?

Trains the tiny Qwen2.5-VL vision tower (the default config) plus a colour-conditioned attention pool
and a linear head to name the shape of the `shape` question's object from the clip it appears in, and
prints the accuracy on test videos. It isolates perception from the memory loop (docs/notes/cold_start.md, "Why the
shape object grew"). Data: shards of `videomem synth` with the radius under test, e.g.

    .venv/bin/python -m videomem.cli synth --out /tmp/r12 --train 6000 --val 0 --test 256 --shape-radius 12
    .venv/bin/python analysis/shape_probe.py --root /tmp/r12 --radius 12 --n 6000 --steps 1500
"""

from __future__ import annotations

import argparse
import glob
import json
import random
import tarfile
import time

import torch
from torch import nn

from videomem.data.shapes import COLOURS, SHAPES
from videomem.data.video import decode_frames
from videomem.model.policy import build_policy
from videomem.model.vision import CLIP_MEAN, CLIP_STD, frames_to_patches


def load(root: str, split: str, n: int, radius: float, size: int) -> list[tuple[torch.Tensor, int, int]]:
    """(frames [8, size, size, 3], shape index, colour index) of the shape object's clip, per video."""
    out = []
    for shard in sorted(glob.glob(f"{root}/{split}/*.tar")):
        with tarfile.open(shard) as tar:
            members = {m.name: m for m in tar}
            for name, member in members.items():
                if not name.endswith(".json"):
                    continue
                meta = json.load(tar.extractfile(member))
                q = next(q for q in meta["questions"] if q["category"] == "shape")
                o = next(o for o in meta["objects"] if o["colour"] == q["target"] and o["radius"] == radius)
                mp4 = tar.extractfile(members[f"{name[:-5]}.{o['clip']:03d}.mp4"]).read()
                frames = decode_frames(mp4, num_frames=8, size=(size, size))
                out.append((frames, SHAPES.index(o["shape"]), list(COLOURS).index(q["target"])))
                if len(out) >= n:
                    return out
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", default="data/synthetic")
    p.add_argument("--radius", type=float, default=12.0, help="the shape object's radius in these shards")
    p.add_argument("--n", type=int, default=6000, help="training videos")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--vision-lr-mult", type=float, default=1.0)
    p.add_argument("--vision-hidden", type=int, default=64)
    p.add_argument("--vision-depth", type=int, default=2)
    p.add_argument("--size", type=int, default=56)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.set_num_threads(1)
    random.seed(a.seed)
    torch.manual_seed(a.seed)
    t0 = time.time()
    train, test = load(a.root, "train", a.n, a.radius, a.size), load(a.root, "test", 300, a.radius, a.size)
    print(f"loaded {len(train)} train / {len(test)} test clips in {time.time() - t0:.0f} s", flush=True)
    tiny = {"vision_depth": a.vision_depth, "vision_hidden_size": a.vision_hidden}
    policy = build_policy(arch="qwen2_5_vl", seed=0, tiny=tiny)
    vision, width = policy.model.model.visual, policy.model.config.text_config.hidden_size
    colour, query, head = nn.Embedding(len(COLOURS), width), nn.Linear(width, width), nn.Linear(width, 4)
    rest = [*colour.parameters(), *query.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(
        [{"params": vision.parameters(), "lr": a.lr * a.vision_lr_mult}, {"params": rest}], lr=a.lr
    )

    def logits(batch):
        patches, grids = zip(
            *[
                frames_to_patches(
                    b[0], patch_size=policy.patch_size, temporal_patch_size=2, merge_size=2,
                    mean=CLIP_MEAN, std=CLIP_STD,
                )
                for b in batch
            ]
        )  # fmt: skip
        out = vision(torch.cat(patches), grid_thw=torch.stack(grids))
        h = getattr(out, "pooler_output", out).view(len(batch), -1, width)  # [B, tokens, width]
        c = colour(torch.tensor([b[2] for b in batch]))  # [B, width]: the asked colour
        w = torch.softmax((query(h) * c[:, None]).sum(-1) / width**0.5, -1)  # [B, tokens]
        return head((w[..., None] * h).sum(1) + c)

    def labels(batch):
        return torch.tensor([b[1] for b in batch])

    for step in range(1, a.steps + 1):
        batch = random.sample(train, 16)
        loss = nn.functional.cross_entropy(logits(batch), labels(batch))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == a.steps:
            with torch.no_grad():
                right = sum(
                    (logits(test[i : i + 50]).argmax(-1) == labels(test[i : i + 50])).sum().item()
                    for i in range(0, len(test), 50)
                )
            print(f"step {step} loss {loss.item():.3f} test accuracy {right / len(test):.3f}", flush=True)


if __name__ == "__main__":
    main()
