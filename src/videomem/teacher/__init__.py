"""The chain-of-memory teachers that write the cold-start memories (``make memories``; docs/data.md).

``chain.py`` is the method (captioner once per video, then writer per question, clip by clip; bad replies
refused), ``answerability.py`` the check that a reader can answer from the last memory alone,
``local.py`` and ``endpoint.py`` the two kinds of backend, ``pipeline.py`` the resumable pass over
shards, ``outdir.py`` its lock and PART split, ``spot_check.py`` the page for checking chains by eye.
Entry point: ``python -m videomem.run_memories`` (configs/memories.yaml).
"""
