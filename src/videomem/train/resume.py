"""Exact resume after a kill: what a Lightning checkpoint must hold beyond weights, and how it loads.

Lightning already saves the weights, the optimizer and LR scheduler states, the loop counters and each
callback's ``state_dict``. This module adds the rest of what decides the next step:

- ``ResumeState`` (a callback, ``configs/callbacks/default.yaml``) saves the global RNGs (torch, CUDA,
  Python ``random``, numpy) of every rank and restores them in ``on_train_start``, i.e. after the
  resumed run has built its training DataLoader iterator (which draws its workers' base seed from the
  torch RNG), so the first resumed step starts from the state the killed run saved.
- It also turns every omegaconf container in the checkpoint (Hydra passes them into hyperparameters
  and optimizer groups) into plain lists and dicts, so the checkpoint loads with torch's safe
  ``weights_only=True`` unpickler; nothing is allow-listed.
- The modules save their own RNGs (``SFTModule``'s step sampler, ``PRPOModule``'s rollout and PSP
  generator) in ``on_save_checkpoint``; the datamodule saves the training stream's position.

One place the resumed run cannot match draw for draw: a validation DataLoader made afresh draws its
workers' base seed from the torch RNG when first iterated (the killed run drew it at its first
validation). Nothing in a training step reads the global torch RNG (sampling and PSP use explicit
generators), so the weights are unaffected; tests/test_resume.py checks them bitwise.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from lightning import Callback, LightningModule, Trainer

from videomem.data.distributed import rank_and_world

log = logging.getLogger(__name__)


def gather_per_rank(obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` (a collective under torch.distributed, else ``[obj]``)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list[Any] = [None] * rank_and_world()[1]
    dist.all_gather_object(out, obj)
    return out


def this_rank(per_rank: list[Any], rank: int) -> Any:
    """This rank's entry of a ``gather_per_rank`` list; None for a rank the saving run did not have (the
    world has grown: that rank keeps its fresh seeds, and the resumed run is not the interrupted one)."""
    return per_rank[rank] if rank < len(per_rank) else None


def plain(obj: Any) -> Any:
    """``obj`` with every omegaconf container (at any depth) turned into plain lists and dicts.

    A dict, list or tuple holding one is rebuilt (as a dict, list or tuple), never changed in place: a
    checkpoint's optimizer groups are shallow copies of the live ones. Everything else is returned as is.
    """
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(obj, (DictConfig, ListConfig)):
        return OmegaConf.to_container(obj, resolve=True)
    if isinstance(obj, dict):
        new = {k: plain(v) for k, v in obj.items()}
        return new if any(new[k] is not v for k, v in obj.items()) else obj
    if isinstance(obj, (list, tuple)) and not hasattr(obj, "_fields"):  # not a NamedTuple
        new = [plain(v) for v in obj]
        changed = any(a is not b for a, b in zip(new, obj))
        return (new if isinstance(obj, list) else tuple(new)) if changed else obj
    return obj


def global_rng_state() -> dict[str, Any]:
    """The global RNG states as tensors and plain Python values (loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_global_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``global_rng_state`` returned."""
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def check_ckpt_path(ckpt_path: str | None) -> None:
    """Refuse a ``ckpt_path`` that does not exist, in one line, before anything is built.

    A sharded checkpoint is a directory; Lightning's own names (``last``, ``best``, ...) pass through.

    Raises:
        SystemExit: With a message naming the path (Hydra prints it without a traceback).
    """
    if ckpt_path is None or ckpt_path in ("last", "best", "hpc", "registry") or Path(ckpt_path).exists():
        return
    raise SystemExit(
        f"ckpt_path: no checkpoint at {ckpt_path} (a run writes <run dir>/checkpoints/last.ckpt at the end "
        "of each epoch and, with callbacks.checkpoint.every_n_train_steps=N, every N steps)"
    )


class ResumeState(Callback):
    """Save every rank's global RNG states with each checkpoint and restore them on resume; keep the
    checkpoint free of omegaconf objects so it loads with safe (``weights_only``) loading."""

    def __init__(self) -> None:
        self._to_restore: list[dict[str, Any]] | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"rng": gather_per_rank(global_rng_state())}  # every rank calls it: a collective is fine

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._to_restore = state_dict["rng"]

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._to_restore is None:
            return
        state, self._to_restore = this_rank(self._to_restore, trainer.global_rank), None
        if state is not None:
            set_global_rng_state(state)
        log.info("resumed at step %d: global RNG states restored", trainer.global_step)

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict) -> None:
        for key in list(checkpoint):
            checkpoint[key] = plain(checkpoint[key])
