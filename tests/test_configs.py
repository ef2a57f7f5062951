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
