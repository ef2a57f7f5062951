"""The body of the training entry points: build everything from config, then ``fit``.

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


def train(cfg: DictConfig) -> dict[str, float]:
    """Instantiate datamodule, module, callbacks, loggers and trainer from ``cfg``, then fit.

    Returns:
        The trainer's final callback metrics as floats.
    """
    L.seed_everything(cfg.seed, workers=True)
    torch.set_num_threads(cfg.get("num_threads") or torch.get_num_threads())
    datamodule = hydra.utils.instantiate(cfg.data)
    module = hydra.utils.instantiate(cfg.module)
    callbacks = instantiate_list(cfg.get("callbacks"))
    loggers = instantiate_list(cfg.get("logger"))
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    log.info("fitting %s", cfg.module._target_)
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    return {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
