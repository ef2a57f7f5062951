"""videomem: clip-by-clip text memory for ultra-long video QA (VideoMem, arXiv 2512.04540)."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

__version__ = "0.1.0"


def _rank_suffix() -> str:
    """``_rank<r>`` in a multi-process launch (torchrun's ``RANK``, SLURM's ``SLURM_PROCID``), else "".

    The ``${rank_suffix:}`` of configs/hydra/default.yaml: every process of a run writes its own log file
    (Lightning's own launcher already names each child's log ``train_ddp_process_<r>.log``).
    """
    for rank, world in (("RANK", "WORLD_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS")):
        if int(os.environ.get(world, 1)) > 1 and rank in os.environ:
            return f"_rank{os.environ[rank]}"
    return ""


OmegaConf.register_new_resolver("rank_suffix", _rank_suffix, replace=True)

#: The Hydra config directory: ``$VIDEOMEM_CONFIGS`` or ``configs/`` of the source checkout.
CONFIG_DIR = os.environ.get("VIDEOMEM_CONFIGS", str(Path(__file__).resolve().parents[2] / "configs"))
