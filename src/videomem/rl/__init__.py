"""PRPO's pieces as pure functions: TCR rewards, group advantages and PSP selection, clipped losses.

Nothing here knows about the trainer, the optimiser or how outputs were generated (CONTRACT.md).
"""
