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


# <memory></memory><answer>X</answer> and the end of turn: ~16 tokens in Qwen's tokenizer (configs/decode/paper.yaml)
STEP_TAG_TOKENS = 16


@pytest.mark.parametrize("experiment", [None, *EXPERIMENTS])
def test_one_decode_group_sets_rollout_validation_and_eval(
    compose_cfg, monkeypatch, tmp_path, experiment
) -> None:
    for var in ("VIDEOMEM_QWEN3_VL_8B", "VIDEOMEM_QWEN2_5_VL_7B"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    overrides = [f"experiment={experiment}"] if experiment else []
    task = "sft" if experiment and "sft" in experiment else "prpo"
    cfg = compose_cfg(task, overrides)
    OmegaConf.resolve(cfg)
    decode = cfg.decode
    assert dict(cfg.module.val_generation) == dict(decode.eval)
    if task == "prpo":
        rollout = {k: cfg.module.rollout[k] for k in ("max_new_tokens", "temperature", "top_p")}
        assert rollout == dict(decode.rollout)
    if experiment is None or experiment.endswith("_tiny"):  # the tiny default decodes as it always has
        assert (decode.eval.max_new_tokens, decode.rollout.max_new_tokens) == (48, 40)
    else:  # the paper recipe: a memory may reach L_max and must come out whole, with its answer
        l_max = compose_cfg("prpo", ["experiment=paper_prpo"]).module.reward.max_memory_tokens
        assert min(decode.eval.max_new_tokens, decode.rollout.max_new_tokens) >= l_max + STEP_TAG_TOKENS
    assert decode.eval.do_sample is False


def test_the_tiny_decode_budgets_hold_the_longest_synthetic_step(compose_cfg) -> None:
    """The open-ended ``order`` step is the longest the tiny default trains on: its memory and answer
    name every clip's colour. A step cut at the budget is filtered out of the update (overlong
    filtering) and loses its answer in evaluation, so even the worst case must fit (18 tokens)."""
    from videomem.data.shapes import COLOURS
    from videomem.data.synthetic import SynthConfig
    from videomem.data.synthetic_text import oracle_memories, reference_from_memory
    from videomem.memory.prompt import format_target
    from videomem.model.policy import build_policy

    policy = build_policy("qwen2_5_vl")
    longest = 0
    for colour in COLOURS:
        clips = [[{"colour": colour, "shape": "circle", "onset": 0}]] * SynthConfig().num_clips
        memory = oracle_memories("order", clips, None)[-1]
        step = format_target(memory, reference_from_memory(memory))
        longest = max(longest, policy.count_tokens(step) + 1)  # + the end of turn
    decode = compose_cfg("prpo").decode
    assert longest == 18  # the figure decode/tiny.yaml states
    assert longest <= min(decode.eval.max_new_tokens, decode.rollout.max_new_tokens)


def test_make_eval_decodes_with_the_group_it_is_given(compose_cfg) -> None:
    assert dict(compose_cfg("eval").decode.eval) == {"max_new_tokens": 48, "do_sample": False}
    assert compose_cfg("eval", ["decode=paper"]).decode.eval.max_new_tokens == 1280
