"""``videomem compare`` on a fake sweep written with ``SummaryWriter``: worked numbers, report, plots.

The fake sweep has the layout of ``make ablate`` (``<sweep>/<variant>_s<seed>/.hydra/*.yaml`` + event
files) and three variants: full, no_psp (psp=false: the speed reference) and no_tcr (tcr=false: the
steps reference), two seeds each.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from torch.utils.tensorboard import SummaryWriter

from videomem.cli import main as cli_main
from videomem.eval.compare import compare, find_sweep, load_job, mean_std, steps_to, tail_mean

VAL_STEPS = (9, 19, 29)
# variant -> switches, per-seed val/accuracy at VAL_STEPS, rollout time per step (update is 0.5 s)
FAKE = {
    "full": ({}, [(0.2, 0.5, 0.5), (0.3, 0.4, 0.7)], 1.0),
    "no_psp": ({"psp": False}, [(0.1, 0.3, 0.4), (0.2, 0.3, 0.4)], 4.0),
    "no_tcr": ({"tcr": False}, [(0.1, 0.2, 0.5), (0.1, 0.3, 0.3)], 1.0),
}


def write_job(
    sweep: Path, num: int, variant: str, seed: int, switches: dict, acc: tuple, rollout_s: float
) -> None:
    job = sweep / f"{variant}_s{seed}"
    (job / ".hydra").mkdir(parents=True)
    cfg = {"variant_name": variant, "seed": seed, "psp": True, "tcr": True, **switches}
    OmegaConf.save(OmegaConf.create(cfg), job / ".hydra" / "config.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": {"job": {"num": num}}}), job / ".hydra" / "hydra.yaml")
    OmegaConf.save(
        OmegaConf.create([f"seed={seed}", f"+variant={variant}", "+ablation=fake"]),
        job / ".hydra" / "overrides.yaml",
    )
    w = SummaryWriter(log_dir=str(job))
    for step in range(8):  # rollout reward: step + seed, logged every step
        w.add_scalar("rollout/reward/total", float(step + seed), step)
        w.add_scalar("rollout/format_valid", 1.0, step)
    for step in VAL_STEPS:
        w.add_scalar("time/rollout_s", rollout_s, step)
        w.add_scalar("time/update_s", 0.5, step)
    for step, value in zip(VAL_STEPS, acc):
        w.add_scalar("val/accuracy", value, step)
        w.add_scalar("val/seg_accuracy/clip_1", value / 2, step)
        w.add_scalar("val/per_category/count", 1.0 - value, step)
    w.close()


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    root = tmp_path / "ablation" / "fake" / "2030-01-01_00-00-00"
    num = 0
    for seed in (0, 1):
        for variant, (switches, accs, rollout_s) in FAKE.items():
            write_job(root, num, variant, seed, switches, accs[seed], rollout_s)
            num += 1
    return root


def test_helpers_worked_numbers() -> None:
    assert mean_std([0.5, 0.7]) == pytest.approx((0.6, math.sqrt(0.02), 2))
    assert mean_std([0.4]) == (0.4, 0.0, 1)
    assert mean_std([math.nan, 2.0]) == (2.0, 0.0, 1)
    assert tail_mean([(s, float(s)) for s in range(8)], 0.25) == 6.5  # last 2 of 8
    assert tail_mean([(0, 3.0)], 0.25) == 3.0
    assert steps_to([(9, 0.2), (19, 0.5), (29, 0.4)], 0.45) == 19
    assert math.isnan(steps_to([(9, 0.2)], 0.45))


def test_summary_worked_numbers(sweep: Path) -> None:
    result = compare(sweep, threshold=0.45)
    v = result["variants"]
    assert list(v) == ["full", "no_psp", "no_tcr"]  # sweep order
    assert v["full"]["seeds"] == [0, 1]
    acc = v["full"]["metrics"]["val/accuracy"]
    assert (acc["mean"], acc["std"], acc["n"]) == pytest.approx((0.6, math.sqrt(0.02), 2))
    assert v["no_psp"]["metrics"]["val/accuracy"]["std"] == pytest.approx(0.0)
    assert v["full"]["metrics"]["val/seg_accuracy/clip_1"]["mean"] == pytest.approx(0.3)
    assert v["full"]["metrics"]["val/per_category/count"]["mean"] == pytest.approx(0.4)
    # reward: mean of the last quarter (steps 6, 7) = 6.5 + seed -> 6.5 and 7.5 over the seeds
    reward = v["full"]["metrics"]["rollout/reward/total"]
    assert (reward["mean"], reward["std"]) == pytest.approx((7.0, math.sqrt(0.5)))
    # step time 1.0 + 0.5 vs 4.0 + 0.5: PRPO is 3x faster than the psp=false reference
    assert result["speed_baseline"] == "no_psp"
    assert v["full"]["metrics"]["time/step_s"]["mean"] == pytest.approx(1.5)
    assert v["full"]["speed_ratio"] == pytest.approx(3.0)
    assert v["no_psp"]["speed_ratio"] == pytest.approx(1.0)
    # steps to 0.45: full 19 and 29; no_tcr 29 (seed 1 never); no_psp never
    assert result["steps_baseline"] == "no_tcr"
    steps = v["full"]["metrics"]["steps_to_threshold"]
    assert (steps["mean"], steps["std"], steps["n"]) == pytest.approx((24.0, math.sqrt(50), 2))
    assert v["no_tcr"]["metrics"]["steps_to_threshold"]["n"] == 1
    assert v["no_psp"]["metrics"]["steps_to_threshold"]["n"] == 0
    assert v["full"]["steps_ratio"] == pytest.approx(24 / 29)


def test_default_threshold_is_90_percent_of_the_lowest_final(sweep: Path) -> None:
    result = compare(sweep)
    assert result["threshold"] == pytest.approx(0.36)  # lowest final mean 0.4 (no_psp, no_tcr)


def test_report_json_and_plots(sweep: Path, tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    assert cli_main(["compare", str(sweep), "--out", str(out), "--threshold", "0.45"]) == 0
    text = (out / "report.md").read_text()
    assert "# Ablation `fake`" in text
    assert "| full | 0,1 | 0.600 ± 0.141 |" in text
    assert "3.00x" in text and "speed vs no_psp" in text
    assert "| full | 2/2 | 24.0 ± 7.1 | 0.83x |" in text
    assert "| no_psp | 0/2 | - | - |" in text
    assert "## Validation accuracy per family" in text
    data = json.loads((out / "summary.json").read_text())  # strict JSON: NaN written as null
    assert data["variants"]["no_psp"]["steps_ratio"] is None
    for png in ("reward.png", "val_accuracy.png"):
        assert f"![{png}]({png})" in text
        blob = (out / png).read_bytes()
        assert blob.startswith(b"\x89PNG") and len(blob) > 5000


def test_default_output_and_newest_sweep(sweep: Path) -> None:
    older = sweep.parent / "2029-01-01_00-00-00"
    write_job(older, 0, "full", 0, {}, (0.1, 0.1, 0.1), 1.0)
    assert find_sweep(sweep.parent) == sweep
    result = compare(sweep.parent)
    assert Path(result["out"]) == sweep / "compare" and (sweep / "compare" / "report.md").exists()


def test_job_without_hydra_files_is_named_from_its_dir(tmp_path: Path) -> None:
    job = tmp_path / "no_mp_s3"
    w = SummaryWriter(log_dir=str(job / "tensorboard"))
    w.add_scalar("val/accuracy", 0.25, 4)
    w.close()
    loaded = load_job(job)
    assert (loaded.variant, loaded.seed) == ("no_mp", 3)
    assert loaded.scalars["val/accuracy"] == [(4, 0.25)]


def test_coinciding_variants_get_distinct_markers_and_dashes(tmp_path: Path, monkeypatch) -> None:
    """Two variants with the same curve (e.g. a switch that changes nothing) must both be visible."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.axes import Axes

    from videomem.eval.compare import Job
    from videomem.eval.curves import plot_curves

    drawn: list[tuple[str, str]] = []
    real_plot = Axes.plot

    def spy(self, *args, **kwargs):
        drawn.append((kwargs.get("marker"), kwargs.get("linestyle")))
        return real_plot(self, *args, **kwargs)

    monkeypatch.setattr(Axes, "plot", spy)
    curve = {"val/accuracy": [(25, 0.5), (50, 0.6)]}
    groups = {v: [Job(f"{v}_s0", v, 0, k, scalars=curve)] for k, v in enumerate(["full", "no_mp", "no_tcr"])}
    assert plot_curves(groups, "val/accuracy", tmp_path / "acc.png")
    assert len(drawn) == 3 and len(set(drawn)) == 3
    assert (tmp_path / "acc.png").stat().st_size > 0


def test_several_sweeps_merge_into_one_table(sweep: Path, tmp_path: Path) -> None:
    """A table from two sweeps (a job one sweep shares with another is run once), variants picked in order."""
    other = tmp_path / "ablation" / "other" / "2030-01-02_00-00-00"
    write_job(other, 0, "prpo_only", 0, {"cold_start": False}, (0.1, 0.1, 0.2), 1.0)
    out = tmp_path / "merged"
    args = ["compare", str(other), str(sweep), "--variants", "full,prpo_only", "--out", str(out)]
    assert cli_main(args) == 0
    data = json.loads((out / "summary.json").read_text())
    assert list(data["variants"]) == ["full", "prpo_only"]
    assert data["variants"]["full"]["seeds"] == [0, 1]
    assert data["variants"]["prpo_only"]["metrics"]["val/accuracy"]["mean"] == pytest.approx(0.2)
    text = (out / "report.md").read_text()
    assert "# Ablation `fake`" in text and f"Sweep: `{other}`, `{sweep}`." in text


def test_several_sweeps_need_an_output_dir_and_no_repeated_job(sweep: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    write_job(other, 0, "full", 0, {}, (0.1, 0.1, 0.1), 1.0)
    with pytest.raises(ValueError, match="--out"):
        compare([sweep, other])
    with pytest.raises(ValueError, match="full seed 0 is in both"):
        compare([sweep, other], out=tmp_path / "o")
    with pytest.raises(ValueError, match="no jobs of variant no_such"):
        compare([sweep], variants=["full", "no_such"])
    assert list(compare([sweep, other], tmp_path / "o", variants=["no_psp", "no_tcr"])["variants"]) == [
        "no_psp",
        "no_tcr",
    ]
