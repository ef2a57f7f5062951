"""Procedural long-video QA whose answers need memory, with an exact oracle chain-of-memory.

A video is T clips (default 4) of F frames (default 8, at 4 fps) of coloured shapes drifting and bouncing
on a grey 64x64 background (pixels: shapes.py). Objects live in one clip each; within a clip one
object appears at frame 0 and the others later (on even frames, so a temporal patch of 2 frames never
hides the order).
Four question families, one question per family per video: three multiple-choice with four lettered
options each, and one open-ended, whose free-text answer is a sequence only the memory can hold
(questions, memories and answers: synthetic_text.py):

| family | kind | answer | memory M_t (after clip t) |
|---|---|---|---|
| count | mc | 1 2 3 4 | "red objects so far: 2" |
| first | mc | 4 colours | "nothing seen yet" -> "first object: blue" |
| shape | mc | 4 shapes | "green object: not seen yet" -> "green object: circle" |
| order | open | "red blue red" | "nothing seen yet" -> "first colours so far: red blue" |

The open-ended family reads the scene the others build and draws nothing itself, so adding or dropping it
leaves the multiple-choice questions' videos unchanged. Videos are built answer-first, so each
multiple-choice family's gold letters are balanced over a split (exactly, up to one) and options keep
one canonical order unless `shuffle_options`. Evidence is kept out of the last clip:
per split and family exactly floor(N * last_clip_rate) questions place their evidence freely, all others
are built so the oracle run on the last clip alone does not give the gold answer (the "last-clip-only"
fraction, reported in stats.json and asserted <= max_last_clip_frac for T >= 2; with T = 1 it is 1.0
by definition). The shape family's object has its own size and speed knobs (smaller = harder; by
default it is larger than the other objects, see SynthConfig). With `spread_count` (default) the
counted objects fall in distinct clips while clips remain, so each memory update adds at most one (two
in one clip only when the count exceeds the clips left).

Deliberately not here: the families' words (synthetic_text.py), prompts (memory/prompt.py), tokenisation
(model/tiny.py reads `synthetic_text.tokenizer_corpus`), streaming (datamodule.py). Shards follow the
schema in shards.py.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from videomem.data.shapes import COLOURS, SHAPES, SynthObject, place_objects, render_clip
from videomem.data.shards import VideoSample, write_shards
from videomem.data.synthetic_text import (
    COUNT_OPTIONS,
    FAMILIES,
    MC_FAMILIES,
    answer_from_memory,
    oracle_memories,
    question_text,
    reference_from_memory,
)
from videomem.data.types import LETTERS, MULTIPLE_CHOICE, OPEN_ENDED
from videomem.data.video import encode_mp4

DEFAULT_SPLITS = {"train": 8000, "val": 64, "test": 256}  # videos per split of `make data`
NUM_OPTIONS = 4


@dataclass
class SynthConfig:
    """Knobs of the generator (defaults = `make data`)."""

    num_clips: int = 4
    frames_per_clip: int = 8
    fps: float = 4.0
    size: int = 64  # square frames, even
    num_colours: int = 6  # first n of COLOURS (>= 4)
    min_objects: int = 1  # per non-empty clip, before objects the questions require
    max_objects: int = 2
    radius: float = 9.0  # count / first / filler objects (px at `size`)
    speed: float = 1.0  # px per frame
    # The shape question's object. Larger than the rest: at 56x56 and 14-px patches a probe on the tiny
    # vision tower stays at chance for radius 7 and passes 0.5 after ~10,000 examples at 12 (docs/notes/cold_start.md).
    shape_radius: float = 12.0
    shape_speed: float = 1.0
    spread_count: bool = True  # counted objects in distinct clips while clips remain (False: may share)
    families: tuple[str, ...] = FAMILIES
    shuffle_options: bool = False
    last_clip_rate: float = 0.15  # fraction of questions whose evidence may fall in the last clip
    max_last_clip_frac: float = 0.30  # asserted on every split when num_clips >= 2
    first_empty_prob: float = 0.25  # video opens with empty clips (tests "nothing seen yet"; T >= 3)

    def __post_init__(self) -> None:
        self.families = tuple(self.families)
        if not 4 <= self.num_colours <= len(COLOURS):
            raise ValueError(f"num_colours must be in 4..{len(COLOURS)}")
        if self.frames_per_clip < 4 or self.size % 2 or self.num_clips < 1:
            raise ValueError("need frames_per_clip >= 4, an even size and num_clips >= 1")
        if unknown := set(self.families) - set(FAMILIES):
            raise ValueError(f"unknown families {unknown}")


# ---------------------------------------------------------------- scene construction
def _arrange(
    canonical: list[str], letter: int, shuffle: bool, rng: np.random.Generator
) -> tuple[list[str], str]:
    """Options with the gold at `letter`: canonical order (gold = canonical[letter]) or a shuffle."""
    if not shuffle:
        return list(canonical), canonical[letter]
    gold = canonical[int(rng.integers(len(canonical)))]
    others = [c for c in canonical if c != gold]
    rng.shuffle(others)
    return others[:letter] + [gold] + others[letter:], gold


def build_scene(
    cfg: SynthConfig, rng: np.random.Generator, letters: dict[str, int], free: dict[str, bool]
) -> tuple[list[SynthObject], dict[str, tuple[list[str], str, str | None]]]:
    """Objects of one video and its questions' (options, gold, target), built from the gold letters.

    Args:
        letters: Gold letter index per family.
        free: Per family, True if its evidence may fall in the last clip.

    Returns:
        (objects, {family: (options, gold_value, target_colour)})
    """
    T, fams = cfg.num_clips, cfg.families
    palette = list(COLOURS)[: cfg.num_colours]
    free = {f: free.get(f, True) or T == 1 for f in FAMILIES}
    qs: dict[str, tuple[list[str], str, str | None]] = {}
    cc = sc = fc = None
    k = 0
    if "count" in fams:
        cc = str(rng.choice(palette))
        opts, gold = _arrange(list(COUNT_OPTIONS), letters["count"], cfg.shuffle_options, rng)
        qs["count"], k = (opts, gold, cc), int(gold)
    if "shape" in fams:
        sc = str(rng.choice([c for c in palette if c != cc]))
        qs["shape"] = (*_arrange(list(SHAPES), letters["shape"], cfg.shuffle_options, rng), sc)
    if "first" in fams:
        subset = sorted(rng.choice(len(palette), NUM_OPTIONS, replace=False))
        opts, fc = _arrange([palette[i] for i in subset], letters["first"], cfg.shuffle_options, rng)
        qs["first"] = (opts, fc, None)
    fillers = [c for c in palette if c not in (cc, sc)]

    t0 = int(rng.integers(1, T - 1)) if T >= 3 and rng.random() < cfg.first_empty_prob else 0

    def pick(is_free: bool) -> int:  # a clip for a piece of evidence
        return int(rng.integers(t0, T if is_free else T - 1))

    def obj(clip: int, colour: str, special: bool = False) -> SynthObject:
        r, v = (cfg.shape_radius, cfg.shape_speed) if special else (cfg.radius, cfg.speed)
        return SynthObject(clip, colour, str(rng.choice(SHAPES)), r, v)

    objects: list[SynthObject] = []
    if sc is not None:
        objects.append(obj(t0 if fc == sc else pick(free["shape"]), sc, special=True))
        objects[-1].shape = qs["shape"][1]
    if cfg.spread_count and cc is not None:  # one counted object per clip while clips remain
        avail = list(range(t0, T if free["count"] or k > 1 else T - 1))
        first = [t0] if fc == cc else []
        rest = [t for t in avail if t not in first]
        clips = first + [int(t) for t in rng.permutation(rest)[: k - len(first)]]
        clips += [int(rng.choice(avail)) for _ in range(k - len(clips))]  # more objects than clips
        counted = [obj(t, cc) for t in clips]
    else:
        counted = [obj(pick(free["count"]), cc) for _ in range(k)]
        if counted and fc == cc:
            counted[0].clip = t0
    if counted and not free["count"] and all(o.clip == T - 1 for o in counted):
        counted[int(rng.integers(k))].clip = pick(False)
    objects += counted
    if fc is not None and fc not in (cc, sc):
        objects.append(obj(t0, fc))
    for t in range(t0, T):  # fill every clip from t0 on up to its drawn object count
        want = int(rng.integers(cfg.min_objects, cfg.max_objects + 1)) - sum(o.clip == t for o in objects)
        objects += [obj(t, str(rng.choice(fillers))) for _ in range(max(0, want))]

    for t in range(t0, T):  # designate each clip's unique earliest object
        in_clip = [o for o in objects if o.clip == t]
        if not in_clip:
            continue
        if t == t0 and fc is not None:
            choices = [o for o in in_clip if o.colour == fc]
        elif t == T - 1 and fc is not None and not free["first"]:
            choices = [o for o in in_clip if o.colour != fc]
            if not choices:
                objects.append(obj(t, str(rng.choice([c for c in fillers if c != fc]))))
                choices = [objects[-1]]
                in_clip.append(objects[-1])
        else:
            choices = in_clip
        first = choices[int(rng.integers(len(choices)))]
        later = np.arange(2, max(3, cfg.frames_per_clip // 2 + 1), 2)
        for o in in_clip:
            o.onset = 0 if o is first else int(rng.choice(later))
    for t in range(t0, T):
        place_objects([o for o in objects if o.clip == t], cfg.size, cfg.frames_per_clip, rng)
    return objects, qs


# ---------------------------------------------------------------- one video -> one shard sample
def make_video(
    cfg: SynthConfig, video_id: str, seed: list[int], letters: dict[str, int], free: dict[str, bool]
) -> VideoSample:
    """Build, render, encode and annotate one video (deterministic in `seed`)."""
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    objects, qs = build_scene(cfg, rng, letters, free)
    T, clip_s = cfg.num_clips, cfg.frames_per_clip / cfg.fps
    per_clip = [[asdict(o) for o in objects if o.clip == t] for t in range(T)]
    for objs in per_clip:
        for d in objs:
            d.pop("speed")
    questions = []
    for fam in cfg.families:
        options, gold, target = qs.get(fam, ([], None, None))  # an open-ended family reads the scene only
        memories = oracle_memories(fam, per_clip, target)
        alone = oracle_memories(fam, per_clip[-1:], target)[-1]  # what the last clip alone says
        if fam in MC_FAMILIES:
            kind, answer = MULTIPLE_CHOICE, LETTERS[options.index(gold)]
            assert answer_from_memory(memories[-1], options) == answer, (video_id, fam, memories)
            last_only = answer_from_memory(alone, options) == answer
        else:
            kind, answer = OPEN_ENDED, reference_from_memory(memories[-1])
            last_only = reference_from_memory(alone) == answer
        questions.append(
            {
                "qid": f"{video_id}-{fam}",
                "question": question_text(fam, target),
                "kind": kind,
                "options": options,
                "answer": answer,
                "category": fam,
                "categories": [fam],
                "memories": memories,
                "target": target,
                "last_clip_answerable": last_only,
            }
        )
    frames = [
        render_clip([o for o in objects if o.clip == t], cfg.size, cfg.frames_per_clip) for t in range(T)
    ]
    clips = [encode_mp4(f, cfg.fps) for f in frames]
    meta = {
        "video_id": video_id,
        "source": "synthetic",
        "duration": T * clip_s,
        "clips": [[t * clip_s, (t + 1) * clip_s] for t in range(T)],
        "questions": questions,
        "fps": cfg.fps,
        "frame_size": [cfg.size, cfg.size],
        "seed": list(seed),
        "objects": [o for objs in per_clip for o in objs],
    }
    return VideoSample(video_id, clips, meta)


def _make_video_star(args: tuple) -> VideoSample:
    return make_video(*args)


def _keep_meta(videos: Iterable[VideoSample], metas: list[dict]) -> Iterator[VideoSample]:
    for video in videos:
        metas.append(video.meta)
        yield video


def split_plan(cfg: SynthConfig, split: str, n: int, seed: int) -> list[tuple]:
    """make_video arguments of a split: disjoint seed streams per split, balanced letters, exact budget."""
    split_id = zlib.crc32(split.encode())
    rng = np.random.default_rng(np.random.SeedSequence([seed, split_id]))
    mc = [f for f in cfg.families if f in MC_FAMILIES]  # an open-ended family draws nothing here
    letters = {f: rng.permutation(np.arange(n) % NUM_OPTIONS) for f in mc}
    free = {f: np.zeros(n, bool) for f in mc}
    for f in mc:
        free[f][rng.permutation(n)[: int(n * cfg.last_clip_rate)]] = True
    return [
        (
            cfg,
            f"synth-{split}-{i:06d}",
            [seed, split_id, i],
            {f: int(letters[f][i]) for f in mc},
            {f: bool(free[f][i]) for f in mc},
        )
        for i in range(n)
    ]


def split_stats(metas: list[dict], cfg: SynthConfig) -> dict:
    """Counts, gold-letter balance (multiple-choice) or answer length in words (open-ended), and the
    last-clip-only fraction per family."""
    stats = {"num_videos": len(metas), "num_clips": cfg.num_clips, "families": {}}
    for fam in cfg.families:
        qs = [q for m in metas for q in m["questions"] if q["category"] == fam]
        fam_stats: dict = {"questions": len(qs)}
        if fam in MC_FAMILIES:
            letters = Counter(q["answer"] for q in qs)
            fam_stats["letters"] = {c: round(letters[c] / max(1, len(qs)), 4) for c in LETTERS[:NUM_OPTIONS]}
        else:
            fam_stats["answer_words"] = round(sum(len(q["answer"].split()) for q in qs) / max(1, len(qs)), 4)
        fam_stats["last_clip_only"] = round(sum(q["last_clip_answerable"] for q in qs) / max(1, len(qs)), 4)
        stats["families"][fam] = fam_stats
    stats["num_questions"] = sum(f["questions"] for f in stats["families"].values())
    return stats


def generate_dataset(
    out_dir: str | Path,
    *,
    splits: dict[str, int] | None = None,
    num_clips: int = 4,
    seed: int = 0,
    workers: int | None = None,
    max_per_shard: int = 64,
    **config,
) -> dict:
    """Write out_dir/<split>/shard-*.tar and out_dir/<split>/stats.json for every split.

    Args:
        out_dir: Dataset root.
        splits: Videos per split (default ``DEFAULT_SPLITS``); one question per family each.
        num_clips: T.
        seed: Base seed; each split draws from SeedSequence([seed, crc32(split)]).
        workers: Processes (default: up to 2); output does not depend on it.
        max_per_shard: Videos per shard.
        **config: Other SynthConfig fields.

    Returns:
        {split: stats} (as in each stats.json, plus "seconds").
    """
    cfg = SynthConfig(num_clips=num_clips, **config)
    splits = dict(DEFAULT_SPLITS) if splits is None else splits
    workers = workers or min(2, os.cpu_count() or 1)
    out: dict[str, dict] = {}
    for split, n in splits.items():
        start, split_dir = time.perf_counter(), Path(out_dir) / split
        split_dir.mkdir(parents=True, exist_ok=True)
        for old in split_dir.glob("shard-*.tar"):  # a smaller regeneration must not leave stale shards
            old.unlink()
        plan, metas = split_plan(cfg, split, n, seed), []
        pool = mp.get_context("fork").Pool(workers) if workers > 1 and n >= 32 else None
        try:
            videos = pool.imap(_make_video_star, plan, chunksize=16) if pool else map(_make_video_star, plan)
            write_shards(_keep_meta(videos, metas), split_dir, max_per_shard=max_per_shard)
        finally:
            if pool is not None:
                pool.terminate()
        stats = {"split": split, "seed": seed, "config": asdict(cfg), **split_stats(metas, cfg)}
        if num_clips >= 2:
            for fam, s in stats["families"].items():
                if s["last_clip_only"] > cfg.max_last_clip_frac:
                    raise RuntimeError(
                        f"{split}/{fam}: last-clip-only fraction {s['last_clip_only']} too high"
                    )
        (split_dir / "stats.json").write_text(json.dumps(stats, indent=1))
        out[split] = {**stats, "seconds": round(time.perf_counter() - start, 2)}
    return out


def main(argv: list[str] | None = None) -> dict:
    """CLI: `videomem synth --out data/synthetic --train 8000 --val 64 --test 256 --clips 4`."""
    p = argparse.ArgumentParser(prog="videomem synth", description=__doc__.split("\n")[0])
    p.add_argument("--out", default="data/synthetic")
    for split, n in DEFAULT_SPLITS.items():
        p.add_argument(f"--{split}", type=int, default=n)
    p.add_argument("--clips", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None)
    defaults = SynthConfig()
    knobs = "frames_per_clip fps size num_colours min_objects max_objects radius speed shape_radius"
    for name in (knobs + " shape_speed last_clip_rate first_empty_prob").split():
        value = getattr(defaults, name)
        p.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    p.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    p.add_argument("--shuffle-options", action="store_true")
    p.add_argument("--no-spread-count", dest="spread_count", action="store_false")
    a = vars(p.parse_args(argv))
    out, splits = a.pop("out"), {s: a.pop(s) for s in DEFAULT_SPLITS}
    stats = generate_dataset(
        out,
        splits={s: n for s, n in splits.items() if n > 0},
        num_clips=a.pop("clips"),
        seed=a.pop("seed"),
        workers=a.pop("workers"),
        **a,
    )
    for split, s in stats.items():
        print(f"{split}: {s['num_videos']} videos, {s['num_questions']} questions, {s['seconds']} s")
        for fam, f in s["families"].items():
            answers = f"letters {f['letters']}" if "letters" in f else f"{f['answer_words']} words per answer"
            print(f"  {fam}: {answers}, last-clip-only {f['last_clip_only']}")
    return stats


if __name__ == "__main__":
    main()
