"""One format for benchmark figures, so `make bench` output can be grepped and compared across runs.

``BENCH <name> <value> target<op><target> PASS|MISS``: the figure is reported, not unit-tested.
"""

from __future__ import annotations

import operator

_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}


def bench_line(name: str, value: float, op: str, target: float) -> str:
    """Print and return one BENCH line, e.g. ``BENCH liger_loss_time_ratio 1.21 target<=1.3 PASS``.

    Args:
        name: Metric name (no spaces).
        value: Measured figure.
        op: Comparison with the target: ``>=``, ``<=``, ``>`` or ``<``.
        target: The value the figure is meant to reach.
    """
    verdict = "PASS" if _OPS[op](value, target) else "MISS"
    line = f"BENCH {name} {value:.4g} target{op}{target:g} {verdict}"
    print(line, flush=True)
    return line
