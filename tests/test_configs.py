"""Every config composes, resolves and (where cheap) instantiates; unknown keys fail loudly."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
from omegaconf import OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError

from videomem import CONFIG_DIR

EXPERIMENTS = sorted(p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml"))
SWITCHES = ["psp=false", "tcr=false", "memory_penalty=false", "cold_start=false", "prpo=false"]


@pytest.mark.parametrize("name", ["sft", "prpo", "eval"])
def test_main_configs_compose_and_resolve(compose_cfg, name: str) -> None:
    cfg = compose_cfg(name)
    OmegaConf.resolve(cfg)  # every interpolation resolves


@pytest.mark.parametrize("name", ["sft", "prpo"])
def test_training_objects_instantiate(compose_cfg, name: str) -> None:
    cfg = compose_cfg(name)
    module = hydra.utils.instantiate(cfg.module)
    assert module.policy is None  # built later, in configure_model (FSDP-ready)
    hydra.utils.instantiate(cfg.data)
    hydra.utils.instantiate(cfg.trainer, logger=False)


@pytest.mark.parametrize("switch", SWITCHES)
def test_ablation_switches_reach_the_module(compose_cfg, switch: str) -> None:
    cfg = compose_cfg("prpo", [switch])
    module = hydra.utils.instantiate(cfg.module)
    key = switch.split("=")[0]
    if key == "psp":
        assert module.rollout_cfg.psp is False
    elif key == "tcr":
        assert module.reward_cfg.tcr is False
    elif key == "memory_penalty":
        assert module.reward_cfg.weights()["memory_length"] == 0.0
    elif key == "cold_start":
        assert module.cold_start is False
    else:
        assert cfg.prpo is False


@pytest.mark.parametrize("name", ["sft", "prpo"])
def test_unknown_key_fails_loudly(compose_cfg, name: str) -> None:
    with pytest.raises((ConfigAttributeError, ConfigKeyError, Exception)) as info:
        compose_cfg(name, ["module.no_such_key=1"])
    assert "no_such_key" in str(info.value)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiments_compose(compose_cfg, monkeypatch, tmp_path, experiment: str) -> None:
    task = "sft" if "sft" in experiment else "prpo"
    for var in ("VIDEOMEM_QWEN3_VL_8B", "VIDEOMEM_QWEN2_5_VL_7B"):  # the paper recipes read a local model dir
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    OmegaConf.resolve(compose_cfg(task, [f"experiment={experiment}"]))


def test_sft_more_continues_the_cold_start_without_overwriting_it(compose_cfg) -> None:
    cfg = compose_cfg("sft", ["experiment=sft_more"])
    assert cfg.model.path.endswith("/sft/latest")
    assert cfg.task_name != "sft"  # its policy lands beside the cold start, not on it
    assert cfg.module.scheduler.total_steps == cfg.trainer.max_steps == 1500


def test_prpo_long_is_the_default_prpo_with_a_schedule_and_a_mixture(compose_cfg) -> None:
    base, long = compose_cfg("prpo", []), compose_cfg("prpo", ["experiment=prpo_long"])
    assert long.task_name == "prpo_long"  # its policy lands beside logs/prpo/latest
    assert long.psp == base.psp and long.tcr == base.tcr
    assert long.module.reward.answer_target == "provisional" and long.data.batch_size == 4  # as measured
    assert {**long.module.reward, "answer_target": None} == {**base.module.reward, "answer_target": None}
    assert long.module.scheduler.total_steps == long.trainer.max_steps == 1000
    assert long.data.category_keep.first == 0.0 and long.data.category_keep.count == 0.5
    assert long.module.rollout.group_size == 16
    assert long.module.kl_coef == 0.0  # measured without an anchor, whatever the default


def test_prpo_steady_pins_the_provisional_reward_1e4_a_schedule_a_batch_and_a_mixture(compose_cfg) -> None:
    base, steady = compose_cfg("prpo", []), compose_cfg("prpo", ["experiment=prpo_steady"])
    assert steady.task_name == "prpo_steady"  # its policy lands beside logs/prpo/latest
    assert steady.module.rollout == base.module.rollout
    assert steady.module.reward.answer_target == "provisional"  # as measured, whatever the default
    assert {**steady.module.reward, "answer_target": None} == {**base.module.reward, "answer_target": None}
    assert steady.psp == base.psp and steady.tcr == base.tcr and steady.init_from == base.init_from
    assert steady.module.scheduler.total_steps == steady.trainer.max_steps == 400
    assert steady.module.optimizer.lr == 1e-4 and steady.data.batch_size == 8
    assert dict(steady.data.category_keep) == {"count": 1.0, "first": 0.0, "shape": 1.0}
    assert steady.module.kl_coef == 0.0  # measured without an anchor, whatever the default


def test_default_prpo_scores_memories_by_their_continuation_on_a_decaying_schedule(compose_cfg) -> None:
    cfg = compose_cfg("prpo", [])
    assert cfg.module.reward.answer_target == "continuation" and cfg.tcr  # README, "PRPO by default"
    assert cfg.module.scheduler.total_steps == cfg.trainer.max_steps  # the cosine ends with the run
    assert cfg.module.scheduler.warmup_steps < cfg.trainer.max_steps
    assert cfg.module.rollout.group_size == 8 and cfg.module.rollout.keep == 1  # the paper's G and K


def test_default_prpo_anchors_to_the_cold_start_on_the_updated_samples_and_the_paper_does_not(
    compose_cfg,
) -> None:
    cfg = compose_cfg("prpo", [])
    assert cfg.module.kl_coef == 0.15 and cfg.module.kl_zero_advantage is False  # README, "PRPO by default"
    assert cfg.trainer.max_steps == 500 and cfg.init_from.endswith("/sft/latest")
    for paper in ("paper_prpo", "paper_prpo_qwen2_5_vl", "paper_prpo_tiny"):  # method.md's DECISION: no KL
        assert compose_cfg("prpo", [f"experiment={paper}"]).module.kl_coef == 0.0


def test_prpo_kl_is_the_exact_kl_objective_at_0_05_over_600_steps(compose_cfg) -> None:
    base, kl = compose_cfg("prpo", []), compose_cfg("prpo", ["experiment=prpo_kl"])
    assert kl.task_name == "prpo_kl"  # its policy lands beside logs/prpo/latest
    assert kl.module.kl_coef == 0.05 and kl.module.kl_zero_advantage is True  # the exact objective
    assert kl.module.scheduler.total_steps == kl.trainer.max_steps == 600
    assert kl.module.reward == base.module.reward and kl.module.rollout == base.module.rollout
    assert kl.data == base.data and kl.module.optimizer == base.module.optimizer


def test_prpo_kl_shape_is_prpo_kl_on_the_updated_samples_with_half_the_count_questions(compose_cfg) -> None:
    kl, shape = compose_cfg("prpo", ["experiment=prpo_kl"]), compose_cfg("prpo", ["experiment=prpo_kl_shape"])
    assert shape.task_name == "prpo_kl_shape"
    assert kl.module.kl_zero_advantage is True and shape.module.kl_zero_advantage is False
    assert (
        shape.module.kl_coef == 0.05 and shape.trainer.max_steps == shape.module.scheduler.total_steps == 600
    )
    assert dict(shape.data.category_keep) == {"count": 0.5, "first": 0.0, "shape": 1.0}
    assert shape.module.reward == kl.module.reward and shape.module.optimizer == kl.module.optimizer
