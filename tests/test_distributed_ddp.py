"""DDP with 2 ranks on CPU/gloo, through the entry points as a user runs them (about 20 s each run).

SFT with Lightning's own launcher (``trainer.devices=2``), as in ``make sft ARGS="trainer.devices=2 ..."``:
validation with uneven shares (``data.val_limit=2``: both questions are of one video, so rank 1 has
none) finishes, because every rank runs as many validation steps (before, rank 0 waited in DDP's
buffer broadcast and rank 1 in the metric sync, for ever); the logged training metrics are those of
both ranks.

PRPO under torchrun: the logged rollout and training metrics are those of both ranks' samples,
identical on both ranks; with 4 micro-batches per step, gradients are reduced once per optimizer step
(a DDP comm hook counts); each rank writes its own log file.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from videomem.model.policy import build_policy

pytestmark = pytest.mark.distributed
ROOT = Path(__file__).resolve().parents[1]
TINY = {"hidden_size": 64, "num_hidden_layers": 1, "intermediate_size": 128}


def run_group(cmd: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    """``cmd`` in its own process group; on timeout the whole group is killed (no stray rank is left)."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"still running after {timeout} s (a hang):\n{out[-4000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, "")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    from videomem.data.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("ddp")
    generate_dataset(root / "data", splits={"train": 4, "val": 2}, workers=1)
    build_policy("qwen2_5_vl", tiny=TINY, system_prompt="").save_pretrained(root / "sft")
    return root


def _common(root: Path, run: Path) -> list[str]:
    return [
        f"data.train_shards={root / 'data' / 'train'}",
        f"data.val_shards={root / 'data' / 'val'}",
        "data.batch_size=1",
        "data.num_workers=0",
        "data.val_limit=2",  # both questions of video 0: all on rank 0
        "trainer.devices=2",
        "trainer.enable_progress_bar=false",
        "module.val_generation.max_new_tokens=6",
        *[f"model.tiny.{k}={v}" for k, v in TINY.items()],
        "+callbacks.probe._target_=tests.distributed_probe.Probe",
        f"+callbacks.probe.out={run}",
        f"hydra.run.dir={run}",
    ]


@pytest.fixture(scope="module")
def sft_run(root) -> list[list[dict]]:
    run = root / "sft_run"
    overrides = [*_common(root, run), "trainer.max_steps=4", "data.epoch_length=4"]  # 2 steps per epoch
    proc = run_group([sys.executable, "-m", "videomem.run_sft", *overrides], root, timeout=240)
    assert proc.returncode == 0, proc.stdout[-6000:]
    return [json.loads((run / f"probe_rank{r}.json").read_text()) for r in range(2)]


def test_sft_with_uneven_validation_finishes_with_metrics_of_both_ranks(sft_run) -> None:
    assert all(len(p) == 4 for p in sft_run)  # 4 steps, a validation after steps 2 and 4: no hang
    for step in range(4):
        ranks = [p[step]["metrics"] for p in sft_run]
        assert ranks[0] == ranks[1]  # every rank logs the figures of both
        assert ranks[0]["train/target_tokens"] > 0


@pytest.fixture(scope="module")
def ddp_run(root) -> tuple[Path, list[list[dict]]]:
    run = root / "run"
    overrides = [
        *_common(root, run),
        f"init_from={root / 'sft'}",
        "data.epoch_length=2",  # one step per epoch: a validation after each
        "trainer.max_steps=2",
        "module.rollout.group_size=4",
        "module.rollout.max_new_tokens=6",
        "module.overlong_filter=false",  # 6 tokens: nearly every sample is cut, none would be updated
        "module.micro_batch_size=4",  # one prompt group of 4 per micro-batch: 4 per question
        "module.skip_zero_advantage=false",
        "module.kl_coef=0.15",
    ]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    proc = run_group([*cmd, "-m", "videomem.run_prpo", *overrides], root, timeout=300)
    assert proc.returncode == 0, proc.stdout[-6000:]
    return run, [json.loads((run / f"probe_rank{r}.json").read_text()) for r in range(2)]


def test_prpo_logs_one_file_per_rank(ddp_run) -> None:
    run, probes = ddp_run
    assert all(len(p) == 2 for p in probes)
    logs = sorted(p.name for p in run.glob("*.log"))
    assert logs == ["run_prpo_rank0.log", "run_prpo_rank1.log"]  # one log file per rank
    assert "fitting" in (run / "run_prpo_rank1.log").read_text()


def test_metrics_are_those_of_both_ranks(ddp_run) -> None:
    _, probes = ddp_run
    for step in range(2):
        ranks = [p[step]["metrics"] for p in probes]
        assert ranks[0]["rollout/samples"] == 2 * 4 * 4  # 2 ranks x 1 question x T=4 clips x G=4
        assert ranks[0]["train/update_samples"] == 32
        assert ranks[0] == ranks[1]  # reduced: every rank logs the same figures


def test_gradients_are_reduced_once_per_optimizer_step(ddp_run) -> None:
    _, probes = ddp_run
    for p in probes:  # 4 micro-batches per step, one backward reducing
        assert [s["reducing_backwards"] for s in p] == [1, 2]
