"""Every ablation sweep (configs/ablation/) expands to the jobs of its paper table, and every job composes.

The jobs are expanded exactly as Hydra's basic sweeper does (its ``split_arguments`` on the file's
``hydra.sweeper.params`` plus the command line), then each job is composed, resolved and its
switches checked against the variant's row; the job's dir (= TensorBoard run) name is ``<variant>_s<seed>``.
"""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict

from videomem import CONFIG_DIR

# The variants each paper table compares (sweep order) and the switches each variant sets.
SWEEPS = {
    "components": ["full", "no_psp", "no_tcr", "no_mp"],  # Table 2
    "reward": ["full", "no_tcr"],  # Table 3
    "cold_start": ["full", "prpo_only", "cold_start_only"],  # Table 5
    "grpo_vs_prpo": ["full", "no_psp"],  # Table 6
}
FULL = {"psp": True, "tcr": True, "memory_penalty": True, "cold_start": True, "prpo": True}
VARIANTS = {
    "full": FULL,
    "no_psp": {**FULL, "psp": False},
    "no_tcr": {**FULL, "tcr": False},
    "no_mp": {**FULL, "memory_penalty": False},
    "prpo_only": {**FULL, "cold_start": False},
    "cold_start_only": {**FULL, "prpo": False},
}


def compose_with_hydra(overrides: list[str]) -> DictConfig:
    """``configs/prpo.yaml`` with ``overrides``, the ``hydra`` node kept (sweeper params, sweep dirs)."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose(config_name="prpo", overrides=overrides, return_hydra_config=True)
            HydraConfig().set_config(cfg)
    finally:
        GlobalHydra.instance().clear()
    return cfg


def sweep_jobs(name: str, cli: tuple[str, ...] = ()) -> list[list[str]]:
    """The override list of every job of ``make ablate NAME=<name> ARGS="<cli>"``, in launch order."""
    cfg = compose_with_hydra([f"+ablation={name}"])
    params = [f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items()]
    overrides = OverridesParser.create().parse_overrides([*params, f"+ablation={name}", *cli])
    (batch,) = BasicSweeper.split_arguments(overrides, max_batch_size=None)
    return batch


def job_key(job: list[str]) -> tuple[str, int]:
    values = dict(o.lstrip("+").split("=", 1) for o in job)
    return values["variant"], int(values["seed"])


def test_every_ablation_file_is_known() -> None:
    files = sorted(p.stem for p in (Path(CONFIG_DIR) / "ablation").glob("*.yaml"))
    assert files == sorted(SWEEPS), "add the new sweep's variants to SWEEPS"
    assert sorted(p.stem for p in (Path(CONFIG_DIR) / "variant").glob("*.yaml")) == sorted(VARIANTS)


@pytest.mark.parametrize("name", sorted(SWEEPS))
def test_sweep_expands_to_variants_times_three_seeds(name: str) -> None:
    keys = [job_key(job) for job in sweep_jobs(name)]
    # seed-major: after the first len(variants) jobs, every variant has one seed.
    assert keys == [(v, s) for s in (0, 1, 2) for v in SWEEPS[name]]


def test_command_line_overrides_the_sweep() -> None:
    keys = [job_key(job) for job in sweep_jobs("grpo_vs_prpo", ("seed=0,1,2,3,4",))]
    assert sorted({s for _, s in keys}) == [0, 1, 2, 3, 4] and len(keys) == 10
    keys = [job_key(job) for job in sweep_jobs("components", ("+variant=no_mp", "seed=7"))]
    assert keys == [("no_mp", 7)]


@pytest.mark.parametrize("name", sorted(SWEEPS))
def test_every_job_composes_with_its_switches_and_name(name: str) -> None:
    for job in sweep_jobs(name):
        variant, seed = job_key(job)
        cfg = compose_with_hydra(job)
        assert OmegaConf.select(cfg, "hydra.sweep.subdir") == f"{variant}_s{seed}"
        sweep_dir = Path(OmegaConf.select(cfg, "hydra.sweep.dir"))
        assert sweep_dir.parent.parent.name == "ablation" and sweep_dir.parent.name == name
        assert cfg.hydra.launcher._target_.endswith("BasicLauncher")  # jobs one after another
        with open_dict(cfg):
            del cfg.hydra
        OmegaConf.resolve(cfg)
        assert cfg.variant_name == variant and cfg.seed == seed
        assert {k: cfg[k] for k in FULL} == VARIANTS[variant]
        assert cfg.module.rollout.psp == cfg.psp and cfg.module.reward.tcr == cfg.tcr
        assert cfg.module.cold_start == cfg.cold_start
        assert cfg.trainer.gradient_clip_val is None  # manual optimisation: the trainer must not clip
        assert cfg.logger.tensorboard.name == ""  # events straight in the job dir
        assert cfg.callbacks.save_policy.latest is None  # logs/prpo/latest stays `make prpo`'s


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variant_reaches_the_module(compose_cfg, variant: str) -> None:
    cfg = compose_cfg("prpo", [f"+variant={variant}"])
    want = VARIANTS[variant]
    assert cfg.variant_name == variant
    module = hydra.utils.instantiate(cfg.module)
    assert module.rollout_cfg.psp is want["psp"]
    assert module.reward_cfg.tcr is want["tcr"]
    assert (module.reward_cfg.weights()["memory_length"] == 0.0) is (not want["memory_penalty"])
    assert module.cold_start is want["cold_start"]
    assert cfg.prpo is want["prpo"]


@pytest.mark.parametrize("name", sorted(SWEEPS))
def test_sweep_dir_resolves_before_hydra_runtime_exists(name: str, monkeypatch) -> None:
    """Hydra's basic sweeper reads ``hydra.sweep.dir`` before any job's HydraConfig is set, so the
    paths it uses must not need ``${hydra:...}`` (``make ablate`` died on exactly that)."""
    monkeypatch.delenv("VIDEOMEM_ROOT", raising=False)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose(config_name="prpo", overrides=[f"+ablation={name}"], return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()
    monkeypatch.setattr(HydraConfig.instance(), "cfg", None)  # as in a fresh `-m` process
    sweep_dir = Path(cfg.hydra.sweep.dir)
    assert sweep_dir.parts[:3] == ("logs", "ablation", name)
