"""synthetic.py: oracle memories, determinism, split disjointness, letter balance, memory need, pixels."""

from __future__ import annotations

import json

import numpy as np
import pytest

from videomem.data.shapes import BACKGROUND, COLOURS, SHAPES
from videomem.data.shards import iter_samples, read_meta, sample_to_videoqa
from videomem.data.synthetic import SynthConfig, generate_dataset, main
from videomem.data.synthetic_text import (
    COUNT_OPTIONS,
    answer_from_memory,
    oracle_memories,
    reference_from_memory,
    tokenizer_corpus,
)


def _metas(root, split):
    return [read_meta(s) for s in iter_samples(str(root / split))]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    stats = generate_dataset(root, splits={"train": 40, "test": 8}, seed=3, workers=1, max_per_shard=16)
    return root, stats


def test_oracle_memories_hand_checked():
    red_sq, blue_ci = (
        {"colour": "red", "shape": "square", "onset": 2},
        {"colour": "blue", "shape": "circle", "onset": 0},
    )
    clips = [
        [],
        [red_sq, blue_ci],
        [{"colour": "green", "shape": "cross", "onset": 0}],
        [dict(red_sq, onset=0)],
    ]
    assert oracle_memories("count", clips, "red") == [
        "red objects so far: 0",
        "red objects so far: 1",
        "red objects so far: 1",
        "red objects so far: 2",
    ]
    # blue appears at frame 0 of clip 2, red at frame 2: blue was first
    assert oracle_memories("first", clips, None) == ["nothing seen yet"] + ["first object: blue"] * 3
    assert oracle_memories("shape", clips, "green") == [
        "green object: not seen yet",
        "green object: not seen yet",
        "green object: cross",
        "green object: cross",
    ]
    assert answer_from_memory("red objects so far: 2", list(COUNT_OPTIONS)) == "B"
    assert answer_from_memory("red objects so far: 0", list(COUNT_OPTIONS)) is None
    assert answer_from_memory("first object: blue", ["red", "green", "blue", "white"]) == "C"
    assert answer_from_memory("green object: not seen yet", list(SHAPES)) is None
    # order: the first object of each clip with objects, repeats kept
    assert oracle_memories("order", clips, None) == [
        "nothing seen yet",
        "first colours so far: blue",
        "first colours so far: blue green",
        "first colours so far: blue green red",
    ]
    assert reference_from_memory("first colours so far: blue green red") == "blue green red"
    assert reference_from_memory("nothing seen yet") is None
    # the last clip alone says "2" for red: it cannot answer a gold count of... 2? it can; of 3 it cannot
    assert answer_from_memory(oracle_memories("count", clips[-1:], "red")[-1], list(COUNT_OPTIONS)) == "A"


def test_letters_balanced_options_canonical_last_clip_rare(dataset):
    root, stats = dataset
    metas = _metas(root, "train")
    assert len(metas) == 40 and stats["train"]["num_questions"] == 160
    for fam in ("count", "first", "shape"):
        qs = [q for m in metas for q in m["questions"] if q["category"] == fam]
        assert sorted(q["answer"] for q in qs) == sorted("ABCD" * 10)  # exactly balanced
        assert stats["train"]["families"][fam]["last_clip_only"] <= 0.30
        saved = json.loads((root / "train" / "stats.json").read_text())["families"][fam]
        assert saved["letters"] == {c: 0.25 for c in "ABCD"}
        for q in qs:
            if fam == "count":
                assert q["options"] == list(COUNT_OPTIONS)
            elif fam == "shape":
                assert q["options"] == list(SHAPES)
            else:
                assert q["options"] == sorted(q["options"], key=list(COLOURS).index)


def test_memories_follow_objects_and_last_clip_flag(dataset):
    root, _ = dataset
    for m in _metas(root, "train"):
        clips = [[o for o in m["objects"] if o["clip"] == t] for t in range(len(m["clips"]))]
        for q in m["questions"]:
            mem = oracle_memories(q["category"], clips, q["target"])
            assert q["memories"] == mem and len(mem) == 4 and all(len(x.split()) <= 12 for x in mem)
            read = (
                reference_from_memory
                if q["kind"] == "open"
                else lambda x, o=q["options"]: answer_from_memory(x, o)
            )
            assert read(mem[-1]) == q["answer"]
            alone = read(oracle_memories(q["category"], clips[-1:], q["target"])[-1])
            assert q["last_clip_answerable"] == (alone == q["answer"])
            if q["category"] == "order":  # each clip's frame-0 object, in clip order
                firsts = [o["colour"] for t in range(4) for o in clips[t] if o["onset"] == 0]
                assert q["kind"] == "open" and q["options"] == [] and q["answer"] == " ".join(firsts)
                assert not q["last_clip_answerable"]
            if q["category"] == "shape":
                assert sum(o["colour"] == q["target"] for o in m["objects"]) == 1


def test_pixels_show_the_first_object(dataset):
    """Frame 0 of the first non-empty clip shows exactly one object: the gold 'first' colour."""
    root, _ = dataset
    for sample in list(iter_samples(str(root / "test")))[:4]:
        qas = {
            q.category: q
            for q in sample_to_videoqa(sample, frames_per_clip=8, frame_size=None, backend="pyav")
        }
        first = qas["first"]
        gold = first.options["ABCD".index(first.answer)]
        t0 = min(o["clip"] for o in first.meta["objects"])
        frame = first.clips[t0][0].numpy().astype(int)  # [H, W, 3]
        fg = np.abs(frame - np.array(BACKGROUND)).sum(-1) > 150
        assert fg.sum() > 20
        mean = frame[fg].mean(0)
        nearest = min(COLOURS, key=lambda c: np.abs(np.array(COLOURS[c]) - mean).sum())
        assert nearest == gold


def test_deterministic_and_disjoint_splits(dataset, tmp_path):
    root, _ = dataset
    again = generate_dataset(tmp_path, splits={"test": 8}, seed=3, workers=1, max_per_shard=16)
    assert _metas(tmp_path, "test") == _metas(root, "test")
    assert (tmp_path / "test" / "shard-000000.tar").read_bytes() == (
        root / "test" / "shard-000000.tar"
    ).read_bytes()
    assert again["test"]["families"]["count"]["letters"] == {c: 0.25 for c in "ABCD"}
    train = {json.dumps(m["objects"]) for m in _metas(root, "train")}
    test = {json.dumps(m["objects"]) for m in _metas(root, "test")}
    assert not train & test
    assert {m["seed"][1] for m in _metas(root, "train")} != {m["seed"][1] for m in _metas(root, "test")}


@pytest.mark.parametrize("num_clips", [1, 2, 32])
def test_any_number_of_clips(num_clips, tmp_path):
    stats = generate_dataset(tmp_path, splits={"val": 4}, num_clips=num_clips, seed=1, workers=1)
    metas = _metas(tmp_path, "val")
    assert all(len(m["clips"]) == num_clips for m in metas)
    assert all(len(q["memories"]) == num_clips for m in metas for q in m["questions"])
    fracs = [f["last_clip_only"] for f in stats["val"]["families"].values()]
    assert fracs == [1.0] * 4 if num_clips == 1 else max(fracs) <= 0.30  # T = 1: the last clip is the video


def test_shuffled_options_stay_balanced(tmp_path):
    generate_dataset(tmp_path, splits={"val": 16}, seed=0, workers=1, shuffle_options=True)
    qs = [q for m in _metas(tmp_path, "val") for q in m["questions"] if q["category"] == "count"]
    assert sorted(q["answer"] for q in qs) == sorted("ABCD" * 4)
    assert any(q["options"] != list(COUNT_OPTIONS) for q in qs)
    assert all(sorted(q["options"]) == list(COUNT_OPTIONS) for q in qs)


def test_tokenizer_corpus_covers_every_emitted_word(dataset):
    root, _ = dataset
    vocab = {w for line in tokenizer_corpus() for w in line.split()}
    for m in _metas(root, "train"):
        for q in m["questions"]:
            words = q["question"].split() + [w for o in q["options"] for w in o.split()]
            words += q["answer"].split() if q["kind"] == "open" else []  # mc: a letter
            words += [w for mem in q["memories"] for w in mem.split()]
            assert set(words) <= vocab
    assert len(vocab) < 70  # a small fixed vocabulary


def test_cli_and_config_validation(tmp_path, capsys):
    stats = main(
        [
            "--out",
            str(tmp_path),
            "--train",
            "4",
            "--val",
            "0",
            "--test",
            "0",
            "--clips",
            "3",
            "--size",
            "48",
            "--shape-radius",
            "3",
        ]
    )
    assert set(stats) == {"train"} and "train: 4 videos, 16 questions" in capsys.readouterr().out
    assert json.loads((tmp_path / "train" / "stats.json").read_text())["config"]["size"] == 48
    with pytest.raises(ValueError):
        SynthConfig(size=63)


@pytest.mark.parametrize("spread", [True, False])
def test_counted_objects_spread_over_clips(spread, tmp_path):
    """spread_count: one counted object per clip while clips remain (a clip holds two only when the
    count exceeds the clips after an empty opening); without it one clip often holds several."""
    generate_dataset(
        tmp_path, splits={"train": 48}, seed=5, workers=1, families=("count",), spread_count=spread
    )
    shared = 0
    for m in _metas(tmp_path, "train"):
        (q,) = m["questions"]
        per_clip = [sum(o["colour"] == q["target"] for o in m["objects"] if o["clip"] == t) for t in range(4)]
        clips_left = 4 - min(o["clip"] for o in m["objects"])  # clips from the first non-empty one
        if sum(per_clip) <= clips_left:
            shared += max(per_clip) > 1
    assert (shared == 0) if spread else shared > 0


def test_the_open_ended_family_leaves_the_multiple_choice_videos_unchanged(dataset, tmp_path):
    root, _ = dataset
    generate_dataset(tmp_path, splits={"test": 8}, seed=3, workers=1, families=("count", "first", "shape"))
    without, with_order = _metas(tmp_path, "test"), _metas(root, "test")
    assert [m["objects"] for m in without] == [m["objects"] for m in with_order]
    assert [m["questions"] for m in without] == [
        [q for q in m["questions"] if q["kind"] == "mc"] for m in with_order
    ]
    assert all([q["category"] for q in m["questions"]][-1] == "order" for m in with_order)
