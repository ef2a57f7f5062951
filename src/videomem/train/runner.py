"""The body of the training entry points: build everything from config, then ``fit`` (or ``validate``).

Kept free of science: the stage (SFT or PRPO) is whatever ``cfg.module`` instantiates.
"""

from __future__ import annotations

import logging

import hydra
import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def instantiate_list(cfg: DictConfig | None) -> list:
    """Instantiate every ``_target_`` entry of a mapping (callbacks, loggers); None entries are skipped."""
    if not cfg:
        return []
    return [hydra.utils.instantiate(c) for c in cfg.values() if c is not None and "_target_" in c]


def build(
    cfg: DictConfig, callbacks: bool = True
) -> tuple[L.LightningDataModule, L.LightningModule, L.Trainer]:
    """Seed, then instantiate datamodule, module, callbacks (unless ``callbacks=False``), loggers and
    trainer from ``cfg``; the loggers record the resolved config as hyperparameters."""
    L.seed_everything(cfg.seed, workers=True)
    torch.set_num_threads(cfg.get("num_threads") or torch.get_num_threads())
    datamodule = hydra.utils.instantiate(cfg.data)
    module = hydra.utils.instantiate(cfg.module)
    loggers = instantiate_list(cfg.get("logger"))
    cbs = instantiate_list(cfg.get("callbacks")) if callbacks else []
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=cbs, logger=loggers)
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    return datamodule, module, trainer


def train(cfg: DictConfig) -> dict[str, float]:
    """Build everything from ``cfg`` (see ``build``), then fit.

    Returns:
        The trainer's final callback metrics as floats.
    """
    datamodule, module, trainer = build(cfg)
    log.info("fitting %s", cfg.module._target_)
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    return {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}


def validate(cfg: DictConfig) -> tuple[L.LightningModule, dict[str, float]]:
    """Build everything but the callbacks from ``cfg``, then run one validation of the initial module
    (logged at step 0 like a training run's validations).

    Returns:
        The module (its model built by ``configure_model``) and the validation metrics as floats.
    """
    datamodule, module, trainer = build(cfg, callbacks=False)
    log.info("validating %s", cfg.module._target_)
    results = trainer.validate(module, datamodule=datamodule)  # [] when validation is switched off
    if not results:
        module.configure_model()
    metrics = results[0] if results else {}
    return module, {k: float(v) for k, v in metrics.items()}
