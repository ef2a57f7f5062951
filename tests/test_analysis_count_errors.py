"""analysis/count_errors.py classifies `count` memory steps by the objects of the asked colour in the clip."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

# analysis/ probes of the synthetic task: out of the default test run (`-m slow` runs them)
pytestmark = pytest.mark.slow


@pytest.fixture
def script():
    """``script("count_probe")`` imports ``analysis/count_probe.py`` (not a package)."""

    def load(name: str) -> ModuleType:
        path = Path(__file__).resolve().parents[1] / "analysis" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


def video(vid: str, red_clips: list[int], memories: list[str]) -> dict:
    objects = [{"clip": c, "colour": "red"} for c in red_clips] + [{"clip": 0, "colour": "blue"}]
    question = {"qid": f"{vid}-count", "category": "count", "target": "red", "memories": memories}
    return {"video_id": vid, "objects": objects, "questions": [question]}


def record(vid: str, memories: list[str], pred: str, answer: str) -> dict:
    return {"video_id": vid, "qid": f"{vid}-count", "category": "count", "memories": memories,
            "pred": pred, "answer": answer}  # fmt: skip


def test_steps_by_targets_in_clip_and_final_split(script):
    mod = script("count_errors")
    so_far = [f"red objects so far: {n}" for n in range(5)]
    metas = {
        # one red object in clips 1 and 2; the policy misses the one in clip 1
        "a": video("a", [1, 2], [so_far[0], so_far[1], so_far[2]]),
        # two red objects in clip 2; the policy adds one
        "b": video("b", [2, 2], [so_far[0], so_far[0], so_far[2]]),
        "c": video("c", [0], [so_far[1], so_far[1], so_far[1]]),
    }
    records = [
        record("a", [so_far[0], so_far[0], so_far[1]], "A", "B"),
        record("b", [so_far[0], so_far[0], so_far[1]], "A", "B"),
        record("c", [so_far[1], so_far[1], so_far[1]], "A", "A"),
    ]
    res = mod.count_errors(records, metas)
    s, f = res["steps"], res["final"]
    # a: clip 0 (n=0) right, clip 1 (n=1) wrong, clip 2 skipped (wrong carried memory)
    # b: clips 0, 1 (n=0) right, clip 2 (n=2) wrong; c: clip 0 (n=1) right, clips 1, 2 (n=0) right
    assert (s[(0, "steps")], s[(0, "wrong")]) == (5, 0)
    assert (s[(1, "steps")], s[(1, "wrong")]) == (2, 1)
    assert (s[(2, "steps")], s[(2, "wrong")]) == (1, 1)
    assert (f[(False, "n")], f[(False, "right")]) == (2, 1)
    assert (f[(True, "n")], f[(True, "right")]) == (1, 0)
    assert mod.targets_per_clip(metas["b"], "red", 3) == [0, 0, 2]
