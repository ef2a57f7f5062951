"""The long-video QA benchmarks: one module per benchmark, all with the same three names.

Each module has ``NAME``, ``RECORD_KEYS`` (the record keys its scorer needs beyond ``qid``, ``pred``,
``answer``, ``categories``), ``read_annotations(path) -> list[BenchVideo]`` (the files exactly as
published) and ``official_score(records) -> dict`` (the benchmark's official aggregate as ``score``,
the pooled ``accuracy``, ``parse_failure_rate`` and breakdowns named ``group/value``; fractions in
[0, 1]). A benchmark whose official scoring needs an LLM judge (MLVU's generation tasks) also has
``judge_generation(records, endpoint)``, which ``make eval ... judge=openai`` calls before scoring.
Formats and rules: ``docs/benchmarks.md`` and each module's docstring.

``BENCHMARKS`` is the one dict from benchmark name to module.
"""

from __future__ import annotations

from types import ModuleType

from videomem.eval.benchmarks import egoschema, longvideobench, lvbench, mlvu, videomme
from videomem.eval.benchmarks.common import BenchVideo, free_text_letter

BENCHMARKS: dict[str, ModuleType] = {m.NAME: m for m in (videomme, lvbench, mlvu, longvideobench, egoschema)}

__all__ = ["BENCHMARKS", "BenchVideo", "free_text_letter"]
