"""config_check.py: every shipped config passes; every rule refuses its bad values with one line naming the
key and the range, and accepts its boundary; the entry points refuse before building anything."""

from __future__ import annotations

import copy
import importlib
import math
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf, open_dict

from tests.conftest import compose_config
from videomem import CONFIG_DIR
from videomem.config_check import RULES, ConfigError, Rule, check_config

EXPERIMENTS = sorted(p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml"))
VARIANTS = sorted(p.stem for p in (Path(CONFIG_DIR) / "variant").glob("*.yaml"))
EVAL_KEYS = {"batch_size", "limit", "frames_per_clip", "frame_size"}


def _base(key: str) -> str:
    """The shipped config a key belongs to (evaluation keys, SFT-only keys, the rest: PRPO)."""
    if key in EVAL_KEYS:
        return "eval"
    return "sft" if key == "module.steps_per_question" else "prpo"


@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> dict:
    """sft, prpo and eval composed once (composing costs ~0.3 s; each test edits a copy)."""
    root = tmp_path_factory.mktemp("cfg")
    return {name: compose_config(name, [], root) for name in ("sft", "prpo", "eval")}


def _with(bases: dict, key: str, value):
    cfg = copy.deepcopy(bases[_base(key)])
    with open_dict(cfg):
        OmegaConf.update(cfg, key, value, force_add=True)
    return cfg


def _bad_values(rule: Rule) -> list:
    bad = ["ten", True, float("nan")]
    if not rule.nullable:
        bad.append(None)
    if rule.integer:
        bad.append(max(rule.lo, 0) + 1.5)
    if rule.lo > -math.inf:
        bad.append(rule.lo if rule.lo_open else rule.lo - 1)
    if rule.hi < math.inf:
        bad.append(rule.hi if rule.hi_open else rule.hi + 1)
    return bad


@pytest.mark.parametrize("name", ["sft", "prpo", "eval"])
def test_shipped_configs_pass(bases, name):
    check_config(bases[name])


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_passes(compose_cfg, experiment):
    check_config(compose_cfg("sft" if "sft" in experiment else "prpo", [f"experiment={experiment}"]))


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_ablation_variant_passes(compose_cfg, variant):
    check_config(compose_cfg("prpo", [f"+variant={variant}"]))


@pytest.mark.parametrize("key", sorted(RULES))
def test_rule_refuses_out_of_range_and_wrong_types_with_one_line(bases, key):
    rule = RULES[key]
    for value in _bad_values(rule):
        with pytest.raises(ConfigError) as info:
            check_config(_with(bases, key, value))
        message = str(info.value)
        assert message.startswith(f"{key}=") and rule.range() in message and "\n" not in message, (
            value,
            message,
        )


@pytest.mark.parametrize("key", sorted(RULES))
def test_rule_accepts_its_boundary(bases, key):
    rule = RULES[key]
    edge = rule.lo if rule.lo > -math.inf and not rule.lo_open else None
    edge = edge if edge is not None else (rule.hi if rule.hi < math.inf and not rule.hi_open else 1)
    if key == "module.rollout.keep":
        edge = 1
    check_config(_with(bases, key, int(edge) if rule.integer else float(edge)))


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("module.rollout.keep", 9, "module.rollout.keep=9: must be <= module.rollout.group_size=8"),
        ("module.optimizer.betas", [0.9], "module.optimizer.betas=[0.9]: must be two numbers in [0, 1)"),
        ("module.optimizer.betas", [0.9, 1.0], "module.optimizer.betas=[0.9, 1.0]: must be two numbers"),
        ("data.frame_size", [56], "data.frame_size=[56]: must be [H, W], integers >= 1"),
        ("data.frame_size", [56, 0], "data.frame_size=[56, 0]: must be [H, W]"),
        ("frame_size", [56], "frame_size=[56]: must be [H, W]"),
        ("data.category_keep.count", 1.5, "data.category_keep.count=1.5: must be a probability in [0, 1]"),
        ("data.backend", "ffmpeg", "data.backend='ffmpeg': must be one of ['decord', 'pyav']"),
    ],
)
def test_cross_key_and_structured_rules(bases, key, value, expected):
    with pytest.raises(ConfigError) as info:
        check_config(_with(bases, key, value))
    assert str(info.value).startswith(expected)


def test_the_issues_examples_name_the_key_and_range(compose_cfg):
    with pytest.raises(ConfigError, match=r"^module\.rollout\.group_size=0: must be an integer >= 2 \(G"):
        check_config(compose_cfg("prpo", ["module.rollout.group_size=0"]))
    with pytest.raises(ConfigError, match=r"^trainer\.max_steps='ten': must be an integer >= 1"):
        check_config(compose_cfg("sft", ["trainer.max_steps=ten"]))


@pytest.mark.parametrize(
    ("entry", "override", "key"),
    [
        ("run_sft", "module.optimizer.lr=-1", "module.optimizer.lr=-1"),
        ("run_prpo", "module.eps_low=1.5", "eps_low"),
    ],
)
def test_entry_points_refuse_before_building_anything(tmp_path, monkeypatch, capsys, entry, override, key):
    module = importlib.import_module(f"videomem.{entry}")

    def build(*_, **__):
        raise AssertionError("the entry point built the run before checking its settings")

    monkeypatch.setattr(module, "train", build)
    monkeypatch.setattr(
        sys, "argv", [entry, override, f"paths.root_dir={tmp_path}", f"hydra.run.dir={tmp_path}"]
    )
    with pytest.raises(SystemExit) as info:  # one line, exit code 2
        module.main()
    err = capsys.readouterr().err
    assert info.value.code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith(f"{entry}: error: ") and key in err and "built the run" not in err
