"""A callback the multi-process tests add to a real training run (``+callbacks.probe._target_=...``).

On every rank it records the training metrics logged at each step and how many backward passes
reduced gradients over ranks (a DDP communication hook counting them), and writes them to
``<out>/probe_rank<r>.json`` at the end of ``fit``. Not a test module itself (no ``test_``).
"""

from __future__ import annotations

import json
from pathlib import Path

from lightning import Callback
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
from torch.nn.parallel import DistributedDataParallel


class Probe(Callback):
    def __init__(self, out: str) -> None:
        self.out = Path(out)
        self.steps: list[dict] = []
        self.reducing_backwards = 0

    def on_train_start(self, trainer, pl_module) -> None:
        model = trainer.strategy.model
        if isinstance(model, DistributedDataParallel):

            def counting_allreduce(state, bucket):
                if bucket.is_last():  # one count per backward that reduces (every bucket reduces then)
                    self.reducing_backwards += 1
                return allreduce_hook(None, bucket)

            model.register_comm_hook(None, counting_allreduce)

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        logged = trainer.callback_metrics
        metrics = {k: float(v) for k, v in logged.items() if k.startswith(("rollout/", "train/"))}
        self.steps.append({"metrics": metrics, "reducing_backwards": self.reducing_backwards})

    def on_fit_end(self, trainer, pl_module) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / f"probe_rank{trainer.global_rank}.json").write_text(json.dumps(self.steps, indent=1))
