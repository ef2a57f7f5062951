"""videomem: clip-by-clip text memory for ultra-long video QA (VideoMem, arXiv 2512.04540)."""

from __future__ import annotations

import os
from pathlib import Path

__version__ = "0.1.0"

#: The Hydra config directory: ``$VIDEOMEM_CONFIGS`` or ``configs/`` of the source checkout.
CONFIG_DIR = os.environ.get("VIDEOMEM_CONFIGS", str(Path(__file__).resolve().parents[2] / "configs"))
