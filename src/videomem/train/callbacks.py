"""Callbacks shared by the training stages."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_only

log = logging.getLogger(__name__)


def point_latest(target: Path, link: Path) -> None:
    """Make ``link`` a symlink to ``target`` (relative, replaced atomically)."""
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.with_name(f".{link.name}.tmp{os.getpid()}")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(os.path.relpath(target, link.parent))
    os.replace(tmp, link)


class SavePolicy(Callback):
    """At the end of ``fit``, save the policy as a loadable checkpoint directory.

    Writes ``<dirpath>`` (model weights, config, tokenizer, chat template) and points ``latest`` at
    it, so ``videomem answer --checkpoint logs/<stage>/latest`` and the next stage load it.

    Args:
        dirpath: Where to save the policy.
        latest: Symlink to update (None: none).
    """

    def __init__(self, dirpath: str, latest: str | None = None) -> None:
        self.dirpath = Path(dirpath)
        self.latest = Path(latest) if latest else None

    @rank_zero_only
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        pl_module.policy.save_pretrained(self.dirpath)
        if self.latest is not None:
            point_latest(self.dirpath.resolve(), self.latest)
        log.info("policy saved to %s%s", self.dirpath, f" (latest: {self.latest})" if self.latest else "")
