"""A mixed multiple-choice + open-ended shard set through ``make sft``, ``make prpo`` and ``make eval``.

The default synthetic data mixes both kinds (three multiple-choice families and the open-ended ``order``).
Both PRPO and the evaluation ask an LLM judge (``judge=openai``) behind a real ``transformers serve``
(``tests/test_judge_serve.py``'s server); a tiny random policy rarely writes a parsable answer, so
this checks the plumbing (rollout/judge/* logged, per-kind figures, the report), not learning. Slow.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.test_judge_serve import judge_server  # noqa: F401 - the module's server fixture
from videomem.data.synthetic import generate_dataset
from videomem.eval.compare import read_scalars

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def make(target: str, root: Path, *args: str) -> str:
    env = {**os.environ, "VIDEOMEM_ROOT": str(root), "OMP_NUM_THREADS": "1"}  # data and logs under root
    proc = subprocess.run(
        ["make", "-s", "-C", str(ROOT), target, *args], capture_output=True, text=True, env=env, timeout=900
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_mixed_kinds_through_make_sft_prpo_and_eval(tmp_path, judge_server):  # noqa: F811
    url, model = judge_server
    stats = generate_dataset(
        tmp_path / "data" / "synthetic", splits={"train": 6, "val": 2, "test": 3}, workers=1
    )
    assert set(stats["test"]["families"]) == {"count", "first", "shape", "order"}
    judge = f"judge=openai judge.base_url={url} judge.model={model} judge.timeout=60"
    # 24 tokens hold the longest step (an `order` memory and answer: 18, tests/test_configs.py) and cap
    # a barely trained policy's rambling below decode/tiny.yaml's 40 / 48
    common = "num_threads=1 data.batch_size=2 data.val_limit=8 data.num_workers=0 trainer.max_steps=2"
    make("sft", tmp_path, f"ARGS={common}")
    assert (tmp_path / "logs" / "sft" / "latest" / "config.json").exists()
    make("prpo", tmp_path, f"ARGS={common} data.epoch_length=2 module.rollout.group_size=2 "
         f"decode.rollout.max_new_tokens=24 decode.eval.max_new_tokens=24 trainer.log_every_n_steps=1 {judge}")  # fmt: skip
    scalars = read_scalars(tmp_path / "logs" / "prpo" / "runs")
    assert {"rollout/judge/requests", "rollout/judge/fallbacks", "rollout/reward/answer"} <= set(scalars)
    assert {"val/per_kind/mc", "val/per_kind/open"} <= set(scalars)
    out = tmp_path / "eval.json"
    make(
        "eval",
        tmp_path,
        f"CKPT={tmp_path}/logs/prpo/latest",
        f"OUT={out}",
        f"ARGS={judge} decode.eval.max_new_tokens=24",
    )
    result = json.loads(out.read_text())
    assert result["n_per_kind"] == {"mc": 9, "open": 3}
    assert set(result["per_kind"]) == {"mc", "open", "open_judge"} and result["judge"] is not None
    assert {r["kind"] for r in result["records"]} == {"mc", "open"}
    assert "open-ended rule score" in out.with_suffix(".md").read_text()
    page = out.with_suffix(".html").read_text()
    assert (
        page.count("<section class=q") == 12 and page.count('"synth-test-00000') == 3
    )  # frames once per video
