"""Callbacks shared by the training stages."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from lightning import Callback, LightningModule, Trainer

from videomem.train.parallel import full_state_dict, is_sharded

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
    it, so ``videomem answer --checkpoint logs/<stage>/latest`` and the next stage load it. A sharded
    (FSDP) policy's full weights are gathered on every rank first, then rank 0 writes them.

    Args:
        dirpath: Where to save the policy.
        latest: Symlink to update (None: none).
    """

    def __init__(self, dirpath: str, latest: str | None = None) -> None:
        self.dirpath = Path(dirpath)
        self.latest = Path(latest) if latest else None

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        state = None
        if is_sharded(pl_module.policy):  # collective; the strategy's root (FSDP1 wraps the whole module)
            full = full_state_dict(trainer.strategy.model)
            state = {k.removeprefix("policy."): v for k, v in full.items() if k.startswith("policy.")}
        if not trainer.is_global_zero:
            return
        pl_module.policy.save_pretrained(self.dirpath, state_dict=state)
        if self.latest is not None:
            point_latest(self.dirpath.resolve(), self.latest)
        log.info("policy saved to %s%s", self.dirpath, f" (latest: {self.latest})" if self.latest else "")
