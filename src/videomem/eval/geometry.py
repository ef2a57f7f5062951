"""Which frames to decode for a saved policy: what it was trained on, unless the user says otherwise.

The frame size lives in ONE place, the data config (``configs/data/*.yaml``: ``frame_size``,
``frames_per_clip``); training saves it beside the policy (``videomem_policy.json``, key ``geometry``:
``height``, ``width``, ``frames_per_clip``, ``clips``). Evaluation, the clip sweep and ``videomem
answer`` read it from there, so a policy is run on frames like the ones it learnt from. Precedence:
an explicit setting, then the saved geometry, then the caller's default (the data config's).

Deliberately not here: choosing a size for a real checkpoint that recorded none (``videomem answer``
fits the video into ``--max-pixels``), decoding.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from omegaconf import OmegaConf

from videomem import CONFIG_DIR

POLICY_FILE = "videomem_policy.json"


def saved_frames(ckpt: str | Path) -> tuple[tuple[int, int], int] | None:
    """``((H, W), frames_per_clip)`` saved beside the policy at ``ckpt``; None when none was recorded
    (a real Qwen-VL dir, a policy saved before the geometry was recorded, or no policy dir at all)."""
    if not Path(ckpt).is_dir():
        return None
    try:
        from videomem.model.checkpoint import saved_geometry
    except ImportError:  # a model layer without it: read the same json key
        saved_geometry = _read_geometry
    geometry = saved_geometry(ckpt)
    if geometry is None:
        return None
    return (int(geometry.height), int(geometry.width)), int(geometry.frames_per_clip)


class _Geometry:
    def __init__(self, height: int, width: int, frames_per_clip: int, **_: object) -> None:
        self.height, self.width, self.frames_per_clip = height, width, frames_per_clip


def _read_geometry(ckpt: str | Path) -> _Geometry | None:
    meta_file = Path(ckpt) / POLICY_FILE
    if not meta_file.is_file():
        return None
    geometry = json.loads(meta_file.read_text()).get("geometry")
    return None if geometry is None else _Geometry(**geometry)


def data_config_frames(name: str = "synthetic") -> tuple[tuple[int, int] | None, int]:
    """``(frame_size or None, frames_per_clip)`` of ``configs/data/<name>.yaml`` (read, not composed)."""
    cfg = OmegaConf.load(Path(CONFIG_DIR) / "data" / f"{name}.yaml")
    size = None if cfg.frame_size is None else (int(cfg.frame_size[0]), int(cfg.frame_size[1]))
    return size, int(cfg.frames_per_clip)


def resolve_frames(
    ckpt: str | Path,
    frame_size: Sequence[int] | None,
    frames_per_clip: int | None,
    default: tuple[Sequence[int] | None, int],
) -> tuple[tuple[int, int] | None, int]:
    """``(frame_size, frames_per_clip)`` to decode for the policy at ``ckpt``.

    Args:
        ckpt: The saved policy dir.
        frame_size, frames_per_clip: Explicit settings (None: not given).
        default: ``(frame_size, frames_per_clip)`` when the policy recorded none (the data config's).
    """
    saved = saved_frames(ckpt)
    size, frames = saved if saved is not None else default
    if frame_size is not None:
        size = frame_size
    if frames_per_clip is not None:
        frames = frames_per_clip
    return (None if size is None else (int(size[0]), int(size[1]))), int(frames)
