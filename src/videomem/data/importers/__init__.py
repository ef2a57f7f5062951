"""The one importer: annotation files + a folder of videos -> shards (``make shards``; docs/data.md).

- ``build.py``: the engine (resumable, ``WORKERS`` processes, ``PART=i/n`` machines), any format;
- ``plan.py``: which video goes into which shard, fixed by the annotation file alone;
- ``formats.py``: the training-set formats (jsonl, LLaVA conversations), read as streams;
- ``stream.py``: a JSON list read one element at a time; ``locate.py``: finding the video files.

The benchmark formats are read by ``videomem.eval.benchmarks`` (beside their official scorers) and
handed to the same engine by ``videomem.eval.importer``, which is also the command line
(``videomem shards``).
"""
