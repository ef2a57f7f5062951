"""Shared fixtures: Hydra composition of the project's configs, tiny policies, tiny shards."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from videomem import CONFIG_DIR


def compose_config(name: str, overrides: list[str], tmp_path: Path) -> DictConfig:
    """Compose ``configs/<name>.yaml`` as Hydra would, with paths redirected into ``tmp_path``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name=name, overrides=overrides, return_hydra_config=True)
        HydraConfig().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.root_dir = str(tmp_path)
        cfg.paths.output_dir = str(tmp_path / "run")
        del cfg.hydra  # read-only; the `hydra:` resolver reads the HydraConfig singleton set above
    GlobalHydra.instance().clear()
    return cfg


@pytest.fixture
def compose_cfg(tmp_path):
    return lambda name, overrides=(): compose_config(name, list(overrides), tmp_path)


def load_script(name: str) -> ModuleType:
    """Import ``scripts/<name>.py`` (the scripts are not a package)."""
    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def script():
    """``script("gpu_bench")`` imports ``scripts/gpu_bench.py``."""
    return load_script
