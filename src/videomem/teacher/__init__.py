"""The chain-of-memory teachers that write the cold-start memories (``make memories``; docs/data.md).

``chain.py`` is the method (captioner then writer, clip by clip), ``local.py`` and ``endpoint.py`` the
two kinds of backend, ``pipeline.py`` the resumable pass over shards, ``spot_check.py`` the page for
checking chains by eye. Entry point: ``python -m videomem.run_memories`` (configs/memories.yaml).
"""
