"""Curves of an ablation sweep (``make compare``): one metric per variant over steps, mean over seeds."""

from __future__ import annotations

from pathlib import Path
from statistics import mean, stdev
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from videomem.eval.compare import Job


def plot_curves(groups: dict[str, list[Job]], tag: str, path: Path) -> bool:
    """Curve of ``tag`` per variant, mean over seeds at each step with a +-std band; False if no data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    drawn = False
    # a marker and a dash pattern per variant, so variants whose curves coincide stay visible
    styles = [(m, d) for d in ("-", "--", ":", "-.") for m in ("o", "s", "^", "D", "v", "P", "X", "*")]
    for k, (variant, js) in enumerate(groups.items()):
        by_step: dict[int, list[float]] = {}
        for j in js:
            for step, value in j.scalars.get(tag, []):
                by_step.setdefault(step, []).append(value)
        if not by_step:
            continue
        steps = sorted(by_step)
        mu = [mean(by_step[s]) for s in steps]
        sd = [stdev(by_step[s]) if len(by_step[s]) > 1 else 0.0 for s in steps]
        marker, dash = styles[k % len(styles)]
        (line,) = ax.plot(
            steps,
            mu,
            marker=marker,
            linestyle=dash,
            markersize=4 + 2 * (len(groups) - 1 - k),  # hollow, earlier variants larger: all stay visible
            markerfacecolor="none",
            label=f"{variant} (n={len(js)})",
        )
        ax.fill_between(
            steps,
            [m - s for m, s in zip(mu, sd)],
            [m + s for m, s in zip(mu, sd)],
            color=line.get_color(),
            alpha=0.2,
        )
        drawn = True
    if drawn:
        ax.set(xlabel="step", ylabel=tag, title=tag)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    plt.close(fig)
    return drawn
