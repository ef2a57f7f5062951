"""Clip-count generalisation: a test split per T, evaluated, one row per T."""

from __future__ import annotations

from videomem.eval.clip_sweep import clip_sweep, markdown
from videomem.memory.loop import GenerationConfig
from videomem.model.policy import build_policy


def test_clip_sweep_generates_each_T_and_reports_it(tmp_path) -> None:
    policy = build_policy(
        "qwen2_5_vl", tiny={"hidden_size": 64, "num_hidden_layers": 1}, system_prompt=""
    ).eval()
    results = clip_sweep(
        policy, [1, 3], tmp_path, videos=2, batch_size=8, gen=GenerationConfig(max_new_tokens=4)
    )
    assert sorted(results) == [1, 3]
    assert (tmp_path / "T1" / "test").is_dir() and (tmp_path / "T3" / "test").is_dir()
    assert len(results[1]["seg_accuracy"]) == 1 and len(results[3]["seg_accuracy"]) == 3
    assert results[3]["n"] == 8  # 2 videos x 4 families
    table = markdown(results)
    assert table.splitlines()[2].startswith("| 1 | 8 |") and table.splitlines()[3].startswith("| 3 | 8 |")
