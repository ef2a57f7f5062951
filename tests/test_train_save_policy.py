"""SavePolicy keeps the last policy and, with a monitor, points `latest` at the best validated one."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from videomem.train.callbacks import SavePolicy


class FakePolicy(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.step = 0

    def save_pretrained(self, path: Path, state_dict=None, *, geometry=None) -> None:  # as Policy's
        path.mkdir(parents=True, exist_ok=True)
        (path / "step").write_text(str(self.step))


class FakeStrategy:
    """Records the barriers a rank passes, after whatever ``events`` already holds."""

    def __init__(self, events: list[str] | None = None) -> None:
        self.events = [] if events is None else events

    def barrier(self, name: str | None = None) -> None:
        self.events.append(f"barrier {name}")


def fit(cb: SavePolicy, val: list[float]) -> SimpleNamespace:
    module = SimpleNamespace(policy=FakePolicy())
    trainer = SimpleNamespace(
        is_global_zero=True, sanity_checking=False, callback_metrics={}, strategy=FakeStrategy()
    )
    for step, acc in enumerate(val, start=1):
        module.policy.step = trainer.global_step = step
        trainer.callback_metrics = {"val/accuracy": torch.tensor(acc)}
        cb.on_validation_end(trainer, module)
    cb.on_fit_end(trainer, module)
    return module


def test_without_monitor_latest_is_the_last_policy(tmp_path) -> None:
    cb = SavePolicy(str(tmp_path / "run" / "policy"), str(tmp_path / "latest"))
    fit(cb, [0.5, 0.9, 0.7])
    assert (tmp_path / "latest" / "step").read_text() == "3"
    assert not (tmp_path / "run" / "policy_best").exists()


def test_with_monitor_latest_is_the_best_validated_policy(tmp_path) -> None:
    cb = SavePolicy(str(tmp_path / "run" / "policy"), str(tmp_path / "latest"), monitor="val/accuracy")
    fit(cb, [0.5, 0.9, 0.7, 0.9])  # a tie does not replace the earlier best
    assert (tmp_path / "latest" / "step").read_text() == "2"
    assert (tmp_path / "run" / "policy" / "step").read_text() == "4"  # the last is kept beside it
    assert (cb.best, cb.best_step) == (pytest.approx(0.9), 2)


def test_min_mode_and_a_bad_mode(tmp_path) -> None:
    cb = SavePolicy(str(tmp_path / "p"), str(tmp_path / "latest"), monitor="val/accuracy", mode="min")
    fit(cb, [0.5, 0.3, 0.4])
    assert (tmp_path / "latest" / "step").read_text() == "2"
    with pytest.raises(ValueError):
        SavePolicy(str(tmp_path / "p"), mode="best")


def test_a_monitor_never_logged_warns_and_keeps_the_last(tmp_path, caplog) -> None:
    cb = SavePolicy(str(tmp_path / "p"), str(tmp_path / "latest"), monitor="val/acc")  # misspelt
    with caplog.at_level("WARNING"):
        fit(cb, [0.5, 0.9])
    assert (tmp_path / "latest" / "step").read_text() == "2"
    assert "'val/acc' was never logged" in caplog.text


def test_the_training_precision_is_saved_beside_the_frame_geometry(tmp_path) -> None:
    saved = {}

    class Recording(FakePolicy):
        def save_pretrained(self, path: Path, state_dict=None, *, geometry=None) -> None:
            saved["geometry"] = geometry

    data = SimpleNamespace(frame_size=[56, 56], frames_per_clip=8)
    trainer = SimpleNamespace(
        is_global_zero=True, datamodule=data, precision="bf16-mixed", strategy=FakeStrategy()
    )
    SavePolicy(str(tmp_path / "p")).on_fit_end(trainer, SimpleNamespace(policy=Recording()))
    geometry = saved["geometry"]
    assert (geometry.frame_size, geometry.frames_per_clip, geometry.precision) == ((56, 56), 8, "bf16-mixed")


@pytest.mark.parametrize("rank", [0, 1])
def test_every_rank_waits_until_rank_0_has_written_the_policy(tmp_path, rank) -> None:
    """Rank 0 writes, then every rank passes one barrier: none returns (or leaves the job) before the
    directory is complete."""
    events: list[str] = []

    class Recording(FakePolicy):
        def save_pretrained(self, path: Path, state_dict=None, *, geometry=None) -> None:
            events.append("write")

    trainer = SimpleNamespace(is_global_zero=rank == 0, strategy=FakeStrategy(events))
    SavePolicy(str(tmp_path / "p")).on_fit_end(trainer, SimpleNamespace(policy=Recording()))
    assert events == (["write", "barrier save_policy"] if rank == 0 else ["barrier save_policy"])
