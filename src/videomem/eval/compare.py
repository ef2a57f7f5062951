"""Compare the jobs of an ablation sweep (``make compare SWEEP=...``, ``videomem compare SWEEP``).

Reads every job's TensorBoard scalars (``EventAccumulator``), groups the jobs by variant (the job's
``variant_name`` and ``seed`` from ``.hydra/config.yaml``, else its dir name ``<variant>_s<seed>``)
and writes, under ``<sweep>/compare/`` by default:

- ``report.md``: per variant, mean +- std over seeds (sample std, 0 for one seed) of the test-split
  figures where ``videomem eval-sweep`` wrote them (``eval/*``: accuracy, Seg1-N, per family), the final
  validation figures (last validation: accuracy, Seg1-N, per family, format rate, memory tokens), the
  rollout figures (mean over the last ``tail`` of logged steps: reward, answer reward, format rate,
  memory tokens), the step time (``time/rollout_s + time/update_s``, mean over logged steps), the
  speed ratio vs the ``psp=false`` variant (Table 6) and the steps to reach a validation accuracy
  (Table 3), with its ratio vs the ``tcr=false`` variant;
- ``summary.json``: the same numbers; ``reward.png``, ``val_accuracy.png``: curves per variant, the
  mean over seeds with a +-std band.

Steps are TensorBoard steps as Lightning logs them. This module reruns nothing and reads no checkpoint.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean, stdev

from omegaconf import OmegaConf

from videomem.eval.curves import plot_curves

Series = list[tuple[int, float]]  # (step, value), sorted by step

ACCURACY = "val/accuracy"
REWARD = "rollout/reward/total"
ROLLOUT_TAGS = [
    "rollout/reward/total",
    "rollout/reward/answer",
    "rollout/format_valid",
    "rollout/memory_tokens",
    "rollout/advantage/zero_fraction",  # samples without a learning signal (terminal reward: most)
]
VAL_TAGS = ["val/accuracy", "val/format_valid_rate", "val/mean_memory_tokens"]
TEST = "eval/accuracy"  # from `videomem eval-sweep`: the job's policy on the test split
STEP_TIME = "time/step_s"  # derived: time/rollout_s + time/update_s
STEPS_TO = "steps_to_threshold"
MAIN_COLUMNS = [
    TEST,
    "eval/seg_accuracy/*",
    "val/accuracy",
    "val/seg_accuracy/*",
    *VAL_TAGS[1:],
    *ROLLOUT_TAGS,
    STEP_TIME,
]


@dataclass
class Job:
    """One job of a sweep: its variant, seed, switches and every scalar it logged."""

    name: str
    variant: str
    seed: int
    order: int  # Hydra's job number (sweep order); orders variants in the report
    switches: dict[str, bool] = field(default_factory=dict)  # psp, tcr, ... as configured
    scalars: dict[str, Series] = field(default_factory=dict)
    path: Path = Path()  # the job's dir


def read_scalars(job_dir: Path) -> dict[str, Series]:
    """Every scalar under ``job_dir`` (all event files, any depth); a step logged twice keeps the last."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    merged: dict[str, dict[int, float]] = {}
    for run_dir in sorted({p.parent for p in job_dir.rglob("events.out.tfevents.*")}):
        acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            merged.setdefault(tag, {}).update({e.step: float(e.value) for e in acc.Scalars(tag)})
    return {tag: sorted(points.items()) for tag, points in merged.items()}


def load_job(job_dir: Path) -> Job:
    """A job from its ``.hydra/`` files (or, without them, its dir name) and its event files."""
    cfg_file, hydra_file = job_dir / ".hydra" / "config.yaml", job_dir / ".hydra" / "hydra.yaml"
    cfg = OmegaConf.load(cfg_file) if cfg_file.exists() else OmegaConf.create()
    match = re.fullmatch(r"(.+)_s(\d+)", job_dir.name)
    variant = cfg.get("variant_name") or (match.group(1) if match else job_dir.name)
    seed = cfg.get("seed", int(match.group(2)) if match else 0)
    order = (
        OmegaConf.select(OmegaConf.load(hydra_file), "hydra.job.num", default=0) if hydra_file.exists() else 0
    )
    switches = {k: bool(cfg[k]) for k in ("psp", "tcr", "memory_penalty", "cold_start", "prpo") if k in cfg}
    scalars = read_scalars(job_dir)
    return Job(job_dir.name, str(variant), int(seed), int(order or 0), switches, scalars, job_dir)


def find_sweep(path: str | Path) -> Path:
    """``path`` itself if it holds jobs, else its newest sub-directory that does (``logs/ablation/<name>``)."""
    path = Path(path)
    if any(path.glob("*/.hydra")) or any(path.glob("*/events.out.tfevents.*")):
        return path
    sweeps = (
        sorted(p for p in path.iterdir() if p.is_dir() and any(p.glob("*/.hydra"))) if path.is_dir() else []
    )
    if not sweeps:
        raise FileNotFoundError(f"no sweep jobs (dirs with .hydra/ or event files) under {path}")
    return sweeps[-1]


def job_dirs(sweep: Path) -> list[Path]:
    """The sweep's job dirs (with ``.hydra/`` or event files), by name; nothing is read from them."""
    dirs = sorted(d for d in sweep.iterdir() if d.is_dir() and d.name != "compare")
    return [d for d in dirs if (d / ".hydra").exists() or any(d.rglob("events.out.tfevents.*"))]


def load_sweep(sweep: Path) -> list[Job]:
    """Every job of the sweep, in sweep order."""
    return sorted((load_job(d) for d in job_dirs(sweep)), key=lambda j: (j.order, j.name))


def tail_mean(series: Series, tail: float) -> float:
    """Mean of the last ``tail`` fraction of the points (at least one); NaN for no point."""
    if not series:
        return math.nan
    k = max(1, math.ceil(len(series) * tail))
    return mean(v for _, v in series[-k:])


def step_time(scalars: dict[str, Series]) -> float:
    """Mean of ``time/rollout_s + time/update_s`` over the steps that logged both."""
    rollout, update = dict(scalars.get("time/rollout_s", [])), dict(scalars.get("time/update_s", []))
    both = [rollout[s] + update[s] for s in rollout if s in update]
    return mean(both) if both else math.nan


def steps_to(series: Series, threshold: float) -> float:
    """First step whose value is >= ``threshold``; NaN if none."""
    return next((float(s) for s, v in series if v >= threshold), math.nan)


def job_metrics(job: Job, threshold: float | None, tail: float) -> dict[str, float]:
    """The job's final figures: last validation, rollout tail means, step time, steps to ``threshold``."""
    last = {tag: series[-1][1] for tag, series in job.scalars.items() if series}
    out = {tag: v for tag, v in last.items() if tag.startswith(("val/", "eval/"))}
    out.update({tag: tail_mean(job.scalars.get(tag, []), tail) for tag in ROLLOUT_TAGS})
    out[STEP_TIME] = step_time(job.scalars)
    if threshold is not None:
        out[STEPS_TO] = steps_to(job.scalars.get(ACCURACY, []), threshold)
    return out


def mean_std(values: list[float]) -> tuple[float, float, int]:
    """(mean, sample std (0 for one value), n) of the non-NaN values; (NaN, NaN, 0) for none."""
    vals = [v for v in values if not math.isnan(v)]
    if not vals:
        return math.nan, math.nan, 0
    return mean(vals), (stdev(vals) if len(vals) > 1 else 0.0), len(vals)


def group(jobs: list[Job]) -> dict[str, list[Job]]:
    """Jobs by variant, variants in sweep order, jobs by seed."""
    groups: dict[str, list[Job]] = {}
    for job in jobs:
        groups.setdefault(job.variant, []).append(job)
    return {v: sorted(js, key=lambda j: j.seed) for v, js in groups.items()}


def baseline(groups: dict[str, list[Job]], switch: str) -> str | None:
    """The one variant whose jobs set ``switch`` false (the reference of a ratio), else None."""
    off = [v for v, js in groups.items() if js and js[0].switches.get(switch) is False]
    return off[0] if len(off) == 1 else None


def default_threshold(groups: dict[str, list[Job]], tail: float) -> float:
    """90% of the lowest final mean validation accuracy over variants: every variant gets there on average."""
    finals = [
        mean_std([job_metrics(j, None, tail).get(ACCURACY, math.nan) for j in js])[0]
        for js in groups.values()
    ]
    finals = [f for f in finals if not math.isnan(f)]
    return round(0.9 * min(finals), 4) if finals else 0.0


def summarize(jobs: list[Job], threshold: float | None = None, tail: float = 0.25) -> dict:
    """Mean/std/n over seeds of every figure per variant, plus the speed and steps ratios.

    Returns:
        ``{"threshold", "speed_baseline", "steps_baseline", "variants": {variant: {"seeds": [...],
        "metrics": {name: {"mean", "std", "n"}}, "speed_ratio", "steps_ratio"}}}``.
    """
    groups = group(jobs)
    if threshold is None:
        threshold = default_threshold(groups, tail)
    variants = {}
    for variant, js in groups.items():
        per_job = [job_metrics(j, threshold, tail) for j in js]
        names = sorted({k for m in per_job for k in m})
        stats = {
            k: dict(zip(("mean", "std", "n"), mean_std([m.get(k, math.nan) for m in per_job]))) for k in names
        }
        variants[variant] = {"seeds": [j.seed for j in js], "metrics": stats}
    speed_ref, steps_ref = baseline(groups, "psp"), baseline(groups, "tcr")
    for v in variants.values():
        v["speed_ratio"] = ratio(variants[speed_ref], v, STEP_TIME) if speed_ref else math.nan  # >1: faster
        v["steps_ratio"] = ratio(v, variants[steps_ref], STEPS_TO) if steps_ref else math.nan  # <1: sooner
    return {
        "threshold": threshold,
        "speed_baseline": speed_ref,
        "steps_baseline": steps_ref,
        "variants": variants,
    }


def ratio(num: dict, den: dict, name: str) -> float:
    """Mean of ``name`` in ``num`` over its mean in ``den`` (variant entries of ``summarize``); NaN if undefined."""
    a = num["metrics"].get(name, {}).get("mean", math.nan)
    b = den["metrics"].get(name, {}).get("mean", math.nan)
    return a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan


def no_nan(obj):
    """``obj`` with every NaN float replaced by None (strict JSON)."""
    if isinstance(obj, dict):
        return {k: no_nan(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [no_nan(v) for v in obj]
    return None if isinstance(obj, float) and math.isnan(obj) else obj


def fmt(stat: dict | None, digits: int = 3) -> str:
    """``mean ± std`` of a ``summarize`` stat, ``-`` when there is none."""
    if not stat or stat["n"] == 0 or math.isnan(stat["mean"]):
        return "-"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def fmt_ratio(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.2f}x"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def report(summary: dict, sweeps: list[Path], ablation: str, plots: list[str]) -> str:
    """The Markdown report of ``summarize``'s output."""
    variants, speed_ref, steps_ref = summary["variants"], summary["speed_baseline"], summary["steps_baseline"]
    names = sorted({k for v in variants.values() for k in v["metrics"]})
    logged = [k for k in names if any(d["metrics"].get(k, {}).get("n") for d in variants.values())]
    expand = lambda col: [k for k in logged if k.startswith(col[:-1])] if col.endswith("*") else [col]  # noqa: E731
    cols = [c for col in MAIN_COLUMNS for c in expand(col) if c in logged]

    main_rows = [
        [v, ",".join(map(str, d["seeds"])), *(fmt(d["metrics"].get(c)) for c in cols)]
        + ([fmt_ratio(d["speed_ratio"])] if speed_ref else [])
        for v, d in variants.items()
    ]
    main_head = ["variant", "seeds", *cols] + ([f"speed vs {speed_ref}"] if speed_ref else [])
    steps_rows = [
        [
            v,
            f"{d['metrics'].get(STEPS_TO, {}).get('n', 0)}/{len(d['seeds'])}",
            fmt(d["metrics"].get(STEPS_TO), 1),
        ]
        + ([fmt_ratio(d["steps_ratio"])] if steps_ref else [])
        for v, d in variants.items()
    ]
    steps_head = ["variant", "seeds that reached it", "steps"] + (
        [f"ratio vs {steps_ref}"] if steps_ref else []
    )
    speed_note = f" Speed: step time of `{speed_ref}` (psp=false) / the variant's." if speed_ref else ""
    out = [
        f"# Ablation `{ablation}`",
        "",
        f"Sweep: {', '.join(f'`{s}`' for s in sweeps)}. Mean ± std over seeds (sample std; 0 for one seed). `eval/*`: the saved "
        "policy on the test split (`videomem eval-sweep`), when evaluated; `val/*`: the last "
        "validation; `rollout/*`: mean over the last logged steps (`--tail`); `time/step_s`: mean of "
        f"time/rollout_s + time/update_s over logged steps.{speed_note}",
        "",
        "## Final metrics",
        "",
        table(main_head, main_rows),
    ]
    for prefix, title in (("eval", "Test"), ("val", "Validation")):
        fams = expand(f"{prefix}/per_category/*")
        if fams:
            rows = [[v, *(fmt(d["metrics"].get(f)) for f in fams)] for v, d in variants.items()]
            out += [
                "",
                f"## {title} accuracy per family",
                "",
                table(["variant", *(f.split("/")[-1] for f in fams)], rows),
            ]
    out += [
        "",
        f"## Steps to reach val/accuracy >= {summary['threshold']:g}",
        "",
        "TensorBoard step of the first validation at or above the threshold; mean over the seeds that "
        "reached it" + (f"; ratio: the variant's steps / `{steps_ref}`'s (tcr=false)." if steps_ref else "."),
        "",
        table(steps_head, steps_rows),
    ]
    if plots:
        out += ["", "## Curves (mean over seeds, band ± std)", "", *(f"![{p}]({p})" for p in plots)]
    return "\n".join(out) + "\n"


def ablation_name(sweep: Path, jobs: list[Job]) -> str:
    """The ``+ablation=<name>`` override of the sweep's jobs, else the sweep's parent dir name."""
    for job in jobs:
        overrides = job.path / ".hydra" / "overrides.yaml"
        for o in OmegaConf.load(overrides) if overrides.exists() else []:
            if str(o).lstrip("+").startswith("ablation="):
                return str(o).split("=", 1)[1]
    return sweep.parent.name


def select_jobs(sweeps: list[Path], variants: list[str] | None) -> list[Job]:
    """The jobs of every sweep in turn, only ``variants`` (in that order) if given; one job per variant/seed."""
    jobs = [job for sweep in sweeps for job in load_sweep(sweep)]
    if variants:
        if missing := [v for v in variants if v not in {j.variant for j in jobs}]:
            raise ValueError(f"no jobs of variant {', '.join(missing)} in {', '.join(map(str, sweeps))}")
        jobs = sorted((j for j in jobs if j.variant in variants), key=lambda j: variants.index(j.variant))
    seen: dict[tuple[str, int], Path] = {}
    for job in jobs:
        if (key := (job.variant, job.seed)) in seen:
            raise ValueError(
                f"{job.variant} seed {job.seed} is in both {seen[key]} and {job.path}: pick one with --variants"
            )
        seen[key] = job.path
    return jobs


def compare(
    sweep: str | Path | list,
    out: str | Path | None = None,
    threshold: float | None = None,
    tail: float = 0.25,
    variants: list[str] | None = None,
) -> dict:
    """Read one sweep (or several, merged), write ``report.md``, ``summary.json`` and the PNGs to ``out``.

    ``out`` defaults to ``<sweep>/compare`` for one sweep and must be given for several (a table whose
    rows come from several sweeps: the jobs one sweep shares with another are run once).
    """
    sweeps = [find_sweep(s) for s in (sweep if isinstance(sweep, list | tuple) else [sweep])]
    if out is None and len(sweeps) > 1:
        raise ValueError("several sweeps: say where the report goes (--out DIR, make compare OUT=DIR)")
    jobs = select_jobs(sweeps, variants)
    if not jobs:
        raise FileNotFoundError(f"no jobs in {', '.join(map(str, sweeps))}")
    sweep = sweeps[0]
    out = Path(out) if out else sweep / "compare"
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(jobs, threshold, tail)
    groups = group(jobs)
    plots = [
        name
        for name, tag in (("reward.png", REWARD), ("val_accuracy.png", ACCURACY))
        if plot_curves(groups, tag, out / name)
    ]
    names = ", ".join(
        dict.fromkeys(ablation_name(s, [j for j in jobs if j.path.parent == s]) for s in sweeps)
    )
    (out / "report.md").write_text(report(summary, sweeps, names, plots))
    where = {"sweep": ", ".join(map(str, sweeps))}
    (out / "summary.json").write_text(json.dumps(no_nan({**where, **summary}), indent=2) + "\n")
    return {**where, "out": str(out), "plots": plots, **summary}


def main(argv: list[str] | None = None) -> int:
    """CLI: ``SWEEP [SWEEP ...] [--variants A,B] [--out DIR] [--threshold X] [--tail F]``; prints the report."""
    p = argparse.ArgumentParser(prog="videomem compare", description="Compare the jobs of an ablation sweep.")
    p.add_argument(
        "sweep",
        nargs="+",
        help="a sweep dir (logs/ablation/<name>/<time>) or its parent (newest sweep); several are merged",
    )
    p.add_argument("--out", help="output dir (default: <sweep>/compare; required for several sweeps)")
    p.add_argument("--variants", help="only these variants, in this order (comma-separated)")
    p.add_argument(
        "--threshold",
        type=float,
        help="val/accuracy for steps-to-threshold (default: 90%% of the lowest final)",
    )
    p.add_argument(
        "--tail", type=float, default=0.25, help="fraction of logged steps averaged for rollout figures"
    )
    args = p.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v] if args.variants else None
    result = compare(args.sweep, args.out, args.threshold, args.tail, variants)
    print((Path(result["out"]) / "report.md").read_text())
    print(f"written to {result['out']}")
    return 0
