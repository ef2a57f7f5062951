"""PRPO's pieces: TCR rewards, group advantages and PSP selection, rollouts, clipped losses.

``rewards``, ``advantages`` and ``loss`` are pure functions; ``rollout`` drives the memory loop's
engine (``videomem.memory.loop``) to sample and score. Nothing here knows about the trainer or the
optimiser (``tests/test_layers.py`` holds the import direction).
"""
