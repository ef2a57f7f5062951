"""The training run reports the data layer's skips: ``data/skipped`` while it runs, a list at the end."""

from __future__ import annotations

import logging
from types import SimpleNamespace

from videomem.train.callbacks import DataSkips


class _Module:
    def __init__(self) -> None:
        self.logged: dict[str, float] = {}

    def log(self, name: str, value: float, **kwargs) -> None:
        self.logged[name] = value


def _trainer(step: int, skipped: int) -> SimpleNamespace:
    samples = [
        {"key": f"v{i}", "split": "train", "url": "a.tar", "reason": "bad clip"} for i in range(skipped)
    ]
    data = SimpleNamespace(skipped=skipped, skipped_samples=samples)
    return SimpleNamespace(datamodule=data, global_step=step, is_global_zero=True)


def test_skips_are_logged_every_n_steps_and_listed_at_the_end(caplog) -> None:
    cb, module = DataSkips(every_n_steps=5), _Module()
    cb.on_train_batch_end(_trainer(3, 2), module)
    assert module.logged == {}  # not a logging step
    cb.on_train_batch_end(_trainer(5, 2), module)
    assert module.logged == {"data/skipped": 2.0}
    with caplog.at_level(logging.INFO, logger="videomem.train.callbacks"):
        cb.on_fit_end(_trainer(6, 3), module)
    assert "data: 3 samples skipped" in caplog.text
    assert all(f"skipped v{i} (train split, a.tar): bad clip" in caplog.text for i in range(3))


def test_a_datamodule_without_a_skip_count_is_left_alone() -> None:
    cb, module = DataSkips(every_n_steps=1), _Module()
    trainer = SimpleNamespace(datamodule=SimpleNamespace(), global_step=1, is_global_zero=True)
    cb.on_train_batch_end(trainer, module)
    cb.on_fit_end(trainer, module)
    assert module.logged == {}
