"""Evaluation: running metrics of the memory loop, the benchmarks' readers and official scorers, and
the command that turns a downloaded benchmark (or a training set) into the project's shards.

- ``metrics.MemoryQAMetrics``: accuracy of a_T, Seg1-N accuracy, per-category, parse / format / memory stats.
- ``benchmarks.BENCHMARKS``: name -> module with ``read_annotations`` and ``official_score``.
- ``importer.import_shards`` / ``importer.main``: annotations + videos -> WebDataset shards, through the
  one importer of ``videomem.data.importers`` (benchmarks and training sets alike).
"""
