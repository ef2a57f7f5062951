"""Callbacks shared by the training stages."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from lightning import Callback, LightningModule, Trainer

from videomem.model.checkpoint import FrameGeometry
from videomem.train.parallel import full_state_dict, is_sharded

log = logging.getLogger(__name__)


def point_latest(target: Path, link: Path) -> None:
    """Make ``link`` a symlink to ``target`` (relative, replaced atomically)."""
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.with_name(f".{link.name}.tmp{os.getpid()}")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(os.path.relpath(target, link.parent))
    os.replace(tmp, link)


def save_policy(trainer: Trainer, pl_module: LightningModule, path: Path) -> bool:
    """Save ``pl_module.policy`` to ``path`` as a loadable checkpoint dir, with the frame geometry of the
    trainer's datamodule. Every rank must call it: a sharded (FSDP) policy's full weights are gathered
    first (a collective), then rank 0 writes them while the others wait (a barrier): every rank returns
    with the directory complete, and no rank leaves the job while rank 0 still works.

    Returns:
        True on the rank that wrote the directory.
    """
    state = None
    if is_sharded(pl_module.policy):  # collective; the strategy's root (FSDP1 wraps the whole module)
        full = full_state_dict(trainer.strategy.model)
        state = {k.removeprefix("policy."): v for k, v in full.items() if k.startswith("policy.")}
    if trainer.is_global_zero:
        # the frame geometry and precision it was trained with, so `make eval` and `videomem answer` reuse them
        data = getattr(trainer, "datamodule", None)
        geometry = FrameGeometry.from_data(data, precision=trainer.precision) if data is not None else None
        pl_module.policy.save_pretrained(path, state_dict=state, geometry=geometry)
    trainer.strategy.barrier("save_policy")
    return trainer.is_global_zero


class SavePolicy(Callback):
    """At the end of ``fit``, save the policy as a loadable checkpoint directory.

    Writes ``<dirpath>`` (model weights, config, tokenizer, chat template) and points ``latest`` at
    it, so ``videomem answer --checkpoint logs/<stage>/latest`` and the next stage load it. A sharded
    (FSDP) policy's full weights are gathered on every rank first, then rank 0 writes them.

    With ``monitor`` (e.g. ``val/accuracy``), every validation run that beats the best value so far
    also saves the policy to ``<dirpath>_best``, and ``latest`` points there at the end: the run's
    result is its best validated policy, not its last (the last is still written to ``<dirpath>``).

    Args:
        dirpath: Where to save the policy.
        latest: Symlink to update (None: none).
        monitor: Logged metric to select the policy by (None: keep the last).
        mode: ``max`` or ``min``: which direction of ``monitor`` is better.
    """

    def __init__(
        self, dirpath: str, latest: str | None = None, monitor: str | None = None, mode: str = "max"
    ) -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', not {mode!r}")
        self.dirpath = Path(dirpath)
        self.latest = Path(latest) if latest else None
        self.monitor, self.mode = monitor, mode
        self.best: float | None = None
        self.best_step: int | None = None

    @property
    def best_dirpath(self) -> Path:
        return self.dirpath.with_name(self.dirpath.name + "_best")

    def _save(self, trainer: Trainer, pl_module: LightningModule, path: Path) -> bool:
        return save_policy(trainer, pl_module, path)

    def state_dict(self) -> dict:
        return {"best": self.best, "best_step": self.best_step}  # a resumed run keeps its best so far

    def load_state_dict(self, state_dict: dict) -> None:
        self.best, self.best_step = state_dict["best"], state_dict["best_step"]

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.monitor is None or trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.monitor])
        better = self.best is None or (value > self.best if self.mode == "max" else value < self.best)
        if better:  # the same on every rank: the validation metrics are torchmetrics, synced on compute
            self.best, self.best_step = value, trainer.global_step
            self._save(trainer, pl_module, self.best_dirpath)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._save(trainer, pl_module, self.dirpath):
            return
        if self.monitor is not None and self.best is None:  # a misspelt metric, or no validation ran
            log.warning("%r was never logged by a validation run: latest is the last policy", self.monitor)
        chosen = self.best_dirpath if self.best is not None else self.dirpath
        if self.latest is not None:
            point_latest(chosen.resolve(), self.latest)
        if self.best is not None:
            log.info("best %s %.4f at step %d: %s", self.monitor, self.best, self.best_step, chosen)
        log.info(
            "policy saved to %s%s",
            self.dirpath,
            f" (latest: {self.latest} -> {chosen})" if self.latest else "",
        )


class DataSkips(Callback):
    """Log how many samples the data layer skipped (``data/skipped``: bad shards, clips, json, questions)
    as training goes, and list them at the end of the run (docs/data.md, "Bad data")."""

    def __init__(self, every_n_steps: int = 10) -> None:
        self.every_n_steps = every_n_steps

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args, **kwargs) -> None:
        data = getattr(trainer, "datamodule", None)
        if data is not None and hasattr(data, "skipped") and trainer.global_step % self.every_n_steps == 0:
            pl_module.log("data/skipped", float(data.skipped), on_step=True, rank_zero_only=True)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        data = getattr(trainer, "datamodule", None)
        if data is None or not hasattr(data, "skipped") or not trainer.is_global_zero:
            return
        listed = data.skipped_samples
        log.info("data: %d samples skipped%s", data.skipped, ", e.g." if listed else "")
        for r in listed[:20]:
            log.info("  skipped %s (%s split, %s): %s", r["key"], r["split"], r["url"], r["reason"])
