"""End to end on tiny data: SFT checkpoint -> ``run_prpo -m +ablation=cold_start`` (seed 0) -> compare.

Covers what composition tests cannot: the multirun launches one job per variant in sequence, the job
dirs (= TensorBoard runs) are ``<variant>_s0``, ``prpo=false`` logs its validation, and compare reads
the real event files. About a minute of CPU, hence ``slow`` (``pytest -m slow tests/test_ablation_smoke.py``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from videomem.eval.compare import compare, read_scalars

TINY = [
    "trainer.max_steps=1",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "data.batch_size=4",
    "data.epoch_length=4",  # one PRPO step per "epoch": a validation after it
    "data.val_limit=4",
    "module.rollout.group_size=2",
    "module.rollout.max_new_tokens=16",
    "module.val_generation.max_new_tokens=16",
    "num_threads=1",
]


def run(*args: str, cwd: Path | None = None) -> None:
    proc = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=cwd)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.slow
def test_cold_start_sweep_runs_and_compares(tmp_path: Path) -> None:
    data, logs = tmp_path / "data", tmp_path / "logs"
    run("videomem.cli", "synth", "--out", str(data), "--train", "8", "--val", "4", "--test", "4")
    shards = [f"data.train_shards={data}/train", f"data.val_shards={data}/val"]
    # started in tmp_path with the default paths (logs/ under the working dir), as `make ablate` is
    run("videomem.run_sft", "trainer.max_steps=2", "data.val_limit=4", "num_threads=1", *shards, cwd=tmp_path)
    run("videomem.run_prpo", "-m", "+ablation=cold_start", "seed=0", *TINY, *shards, cwd=tmp_path)

    (sweep,) = (logs / "ablation" / "cold_start").iterdir()
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == ["cold_start_only_s0", "full_s0", "prpo_only_s0"]
    assert "val/accuracy" in read_scalars(sweep / "cold_start_only_s0")  # prpo=false still validates
    assert (sweep / "cold_start_only_s0" / "policy").is_dir()
    assert "rollout/reward/total" in read_scalars(sweep / "full_s0")
    assert not (logs / "prpo" / "latest").exists()  # the sweep leaves `make prpo`'s link alone

    result = compare(logs / "ablation" / "cold_start")
    assert list(result["variants"]) == ["full", "prpo_only", "cold_start_only"]
    assert (sweep / "compare" / "report.md").exists() and result["plots"]
