"""Exact resume after ``kill -9``: SFT and PRPO through ``python -m videomem.run_*``, like ``make sft``.

Each stage runs three times on tiny data: uninterrupted; killed with SIGKILL two steps after a mid-epoch
checkpoint (``KillAt``, a callback added by override); resumed from that run's ``last.ckpt``. The
resumed run's final weights must equal the uninterrupted run's bitwise (one CPU thread). Without the
saved stream position or the rollout generator they differ by ~1e-2 (checked by hand when this test
was written). Also: checkpoints load with safe (``weights_only``) loading, the training stream resumes
mid-epoch with 0, 1 or 2 workers, and a missing ``ckpt_path`` is one line naming it.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning import Callback
from omegaconf import OmegaConf
from safetensors.torch import load_file

from videomem.data.datamodule import VideoQADataModule
from videomem.data.synthetic import generate_dataset
from videomem.model.policy import build_policy
from videomem.train.callbacks import SavePolicy
from videomem.train.resume import ResumeState, global_rng_state, plain, set_global_rng_state

ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = [
    "model.tiny.hidden_size=64",
    "model.tiny.num_hidden_layers=1",
    "model.tiny.intermediate_size=128",
]


class KillAt(Callback):
    """``kill -9`` this process when training step ``step`` starts (the work since the last
    checkpoint is lost, as in a preempted job)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("resume_data")
    generate_dataset(out, splits={"train": 8, "val": 2}, workers=1)
    return out


def _run(module: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", module, *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _kill_and_resume(module: str, common: list[str], tmp_path: Path, every: int, kill_at: int) -> None:
    """Uninterrupted vs killed-then-resumed: the final policies are bitwise equal."""
    common = [*common, f"callbacks.checkpoint.every_n_train_steps={every}", "num_threads=1"]
    full = _run(module, [*common, f"hydra.run.dir={tmp_path}/full"], tmp_path)
    assert full.returncode == 0, full.stderr[-3000:]

    kill = [f"+callbacks.kill._target_={__name__}.KillAt", f"+callbacks.kill.step={kill_at}"]
    killed = _run(module, [*common, *kill, f"hydra.run.dir={tmp_path}/killed"], tmp_path)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    ckpt = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, weights_only=True)  # safe loading, nothing allow-listed
    assert 0 < state["global_step"] < kill_at and not (tmp_path / "killed" / "policy").exists()
    assert (
        state["VideoQADataModule"]["batches"] % state["VideoQADataModule"]["batches_per_epoch"] != 0
    )  # mid-epoch

    resumed = _run(module, [*common, f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path}/resumed"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "training stream resumes at epoch" in resumed.stderr + resumed.stdout
    a = load_file(tmp_path / "full" / "policy" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "policy" / "model.safetensors")
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[0]}"


@pytest.mark.slow  # two training subprocesses and a resumed one: ~25 s
def test_sft_killed_and_resumed_ends_with_the_same_weights(data, tmp_path) -> None:
    common = [
        f"data.train_shards={data}/train",
        f"data.val_shards={data}/val",
        "data.epoch_length=12",  # 3 steps of 4 per epoch, a validation after each
        "data.val_limit=2",
        "trainer.max_steps=9",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "module.val_generation.max_new_tokens=8",
        "module.steps_per_question=2",  # the module's own RNG picks the clip steps: it is restored too
        *TINY_MODEL,
    ]
    _kill_and_resume("videomem.run_sft", common, tmp_path, every=4, kill_at=6)  # resumes at epoch 1, batch 1


@pytest.mark.slow  # two training subprocesses and a resumed one: ~25 s
def test_prpo_killed_and_resumed_ends_with_the_same_weights(data, tmp_path) -> None:
    sft = tmp_path / "sft_policy"
    tiny = {"hidden_size": 64, "num_hidden_layers": 1, "intermediate_size": 128}
    build_policy("qwen2_5_vl", tiny=tiny).save_pretrained(sft)
    common = [
        f"init_from={sft}",
        f"data.train_shards={data}/train",
        f"data.val_shards={data}/val",
        "data.batch_size=2",
        "data.epoch_length=6",  # 3 steps per epoch
        "data.val_limit=2",
        "trainer.max_steps=7",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "module.val_generation.max_new_tokens=8",
        "module.rollout.group_size=4",
        "module.rollout.max_new_tokens=6",
        "module.overlong_filter=false",  # a random policy's samples are all cut at 6 tokens
        "module.optimizer.lr=1e-2",
        "module.skip_zero_advantage=false",  # every sample trains: the rollout's draws show in the weights
        *TINY_MODEL,
    ]
    _kill_and_resume("videomem.run_prpo", common, tmp_path, every=2, kill_at=5)  # resumes at epoch 1, batch 1
    start = load_file(sft / "model.safetensors")
    end = load_file(tmp_path / "full" / "policy" / "model.safetensors")
    assert any(not torch.equal(start[k], end[k]) for k in start)  # the equality above is not trivial


@pytest.mark.slow  # a fresh interpreter with torch and lightning: ~5 s
def test_missing_checkpoint_is_one_line_naming_it(tmp_path) -> None:
    missing = tmp_path / "run" / "checkpoints" / "last.ckpt"
    proc = _run("videomem.run_sft", [f"ckpt_path={missing}"], tmp_path)
    assert proc.returncode != 0
    assert f"no checkpoint at {missing}" in proc.stderr and "Traceback" not in proc.stderr


def test_checkpoint_with_omegaconf_values_loads_with_safe_loading(tmp_path) -> None:
    """Hydra hands ListConfig / DictConfig to hyperparameters and optimizer groups: ``ResumeState``
    makes them plain before saving, so ``weights_only=True`` loads the checkpoint."""
    cfg = OmegaConf.create({"frame_size": [56, 56], "keep": {"count": 1.0}, "betas": [0.9, 0.95]})
    live_group = {"lr": 1e-3, "betas": cfg.betas}
    checkpoint = {
        "datamodule_hyper_parameters": {"frame_size": cfg.frame_size, "category_keep": cfg.keep},
        "optimizer_states": [{"state": {}, "param_groups": [dict(live_group)]}],
        "state_dict": {"w": torch.ones(2)},
    }
    torch.save(checkpoint, tmp_path / "raw.ckpt")
    with pytest.raises(Exception, match="Weights only load failed"):
        torch.load(tmp_path / "raw.ckpt", weights_only=True)

    ResumeState().on_save_checkpoint(None, None, checkpoint)
    torch.save(checkpoint, tmp_path / "plain.ckpt")
    loaded = torch.load(tmp_path / "plain.ckpt", weights_only=True)
    assert loaded["datamodule_hyper_parameters"] == {"frame_size": [56, 56], "category_keep": {"count": 1.0}}
    assert loaded["optimizer_states"][0]["param_groups"][0]["betas"] == [0.9, 0.95]
    assert live_group["betas"] is cfg.betas  # the live optimizer group is left alone
    assert plain(checkpoint["state_dict"]) is checkpoint["state_dict"]  # nothing to change: not copied


def test_global_rng_states_round_trip_through_safe_loading(tmp_path) -> None:
    torch.save({"rng": global_rng_state()}, tmp_path / "rng.ckpt")
    expected = (torch.rand(3), random.random(), np.random.rand(3))
    set_global_rng_state(torch.load(tmp_path / "rng.ckpt", weights_only=True)["rng"])
    again = (torch.rand(3), random.random(), np.random.rand(3))
    assert torch.equal(expected[0], again[0]) and expected[1] == again[1]
    assert np.array_equal(expected[2], again[2])


def test_save_policy_keeps_its_best_across_a_resume(tmp_path) -> None:
    cb = SavePolicy(str(tmp_path / "p"), monitor="val/accuracy")
    cb.best, cb.best_step = 0.75, 40
    resumed = SavePolicy(str(tmp_path / "p"), monitor="val/accuracy")
    resumed.load_state_dict(cb.state_dict())
    assert (resumed.best, resumed.best_step) == (0.75, 40)


def _stream(data: Path, workers: int, state: dict | None = None) -> VideoQADataModule:
    dm = VideoQADataModule(
        train_shards=str(data / "train"),
        batch_size=2,
        num_workers=workers,
        frames_per_clip=2,
        frame_size=[28, 28],
        epoch_length=12,  # 6 batches per epoch over all workers
        category_keep={"first": 0.5},
    )
    if state is not None:
        dm.load_state_dict(state)
    return dm


def _epochs(loader, n: int) -> list[list[str]]:
    """Batches (as qid lists) of ``n`` epochs of one loader, as Lightning iterates it."""
    return [[qa.qid for qa in batch] for _ in range(n) for batch in loader]


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_training_stream_resumes_mid_epoch_in_the_same_order(data, workers) -> None:
    """A stream resumed at (epoch 1, 3 batches consumed) yields exactly the rest of the uninterrupted one,
    the next epoch included; resumed at the wrong place it would not (the check can fail)."""
    full = _epochs(_stream(data, workers).train_dataloader(), 3)  # [18 batches]
    shape = {"batches_per_epoch": 6, "workers": max(1, workers), "world": 1, "videos": 8, "batch_size": 2}
    resumed = _epochs(_stream(data, workers, {"epoch": 1, "batches": 3, **shape}).train_dataloader(), 2)
    assert resumed == full[9:]  # 3 left of epoch 1, then epoch 2
    assert full[6:9] != full[9:12]  # so a resume that did not skip would be caught
    at_end = _epochs(_stream(data, workers, {"epoch": 0, "batches": 6, **shape}).train_dataloader(), 1)
    assert at_end == full[6:12]  # a checkpoint at the end of epoch 0 resumes at the start of epoch 1
