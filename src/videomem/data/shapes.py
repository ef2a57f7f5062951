"""Pixels of the synthetic videos: coloured shapes drifting and bouncing on a mid-grey background (numpy only).

An object lives in one clip, appears at frame `onset` and moves `vel` pixels per frame from `pos`,
reflecting off the frame borders. `place_objects` draws start positions and headings so that no two
visible objects touch (best effort); `render_clip` rasterises a clip with hard edges (no antialiasing, so
a colour is exactly one RGB value before H.264).

Deliberately not here: which objects a video holds and what is asked about them (synthetic.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

COLOURS: dict[str, tuple[int, int, int]] = {  # also the canonical order of colour options
    "red": (230, 40, 40),
    "green": (40, 200, 70),
    "blue": (50, 100, 255),
    "yellow": (240, 220, 40),
    "white": (235, 235, 235),
    "purple": (170, 70, 230),
}
SHAPES = ("circle", "square", "triangle", "cross")  # also the canonical order of shape options
BACKGROUND = (
    120,
    118,
    110,
)  # mid-grey ~ the CLIP pixel mean: background patches normalise to ~0, objects stand out


@dataclass
class SynthObject:
    """One object: lives in clip `clip` from frame `onset` on, drifting from `pos` by `vel` per frame."""

    clip: int
    colour: str
    shape: str
    radius: float  # px at the rendered size
    speed: float  # px per frame
    onset: int = 0
    pos: tuple[float, float] = (0.0, 0.0)  # (y, x) centre at onset
    vel: tuple[float, float] = (0.0, 0.0)  # (dy, dx) per frame


def trajectory(o: SynthObject, size: int, num_frames: int) -> np.ndarray:
    """[F, 2] (y, x) centre per frame (NaN before onset), reflecting inside [r, size - 1 - r]."""
    f = np.arange(num_frames, dtype=np.float64)[:, None] - o.onset  # [F, 1]
    lo, span = o.radius, size - 1 - 2 * o.radius
    y = np.mod(np.asarray(o.pos) + np.asarray(o.vel) * f - lo, 2 * span)  # [F, 2]
    y = lo + np.where(y > span, 2 * span - y, y)  # [F, 2]
    y[f[:, 0] < 0] = np.nan
    return y


def place_objects(
    objs: list[SynthObject], size: int, num_frames: int, rng: np.random.Generator, tries: int = 200
) -> None:
    """Draw start positions and headings of one clip's objects, redrawn until no two visible ones touch.

    After `tries` failed draws the last one is kept (crowded clips may overlap briefly).
    """
    radii = np.array([o.radius for o in objs])  # [n]
    need = radii[:, None] + radii[None, :] + 2  # [n, n] centre distance that leaves a 2 px gap
    np.fill_diagonal(need, 0.0)
    for _ in range(tries):
        for o in objs:
            o.pos = tuple(rng.uniform(o.radius, size - 1 - o.radius, 2).round(2).tolist())
            angle = rng.uniform(0, 2 * np.pi)
            o.vel = (round(o.speed * np.sin(angle), 3), round(o.speed * np.cos(angle), 3))
        if len(objs) < 2:
            return
        paths = np.stack([trajectory(o, size, num_frames) for o in objs])  # [n, F, 2]
        gap = np.linalg.norm(paths[:, None] - paths[None, :], axis=-1)  # [n, n, F]
        if not np.any(gap < need[..., None]):  # NaN (not yet visible) compares False
            return


def shape_mask(shape: str, dy: np.ndarray, dx: np.ndarray, r: float) -> np.ndarray:
    """Boolean mask of a shape of radius r, given pixel offsets dy [h, 1] and dx [1, w] from its centre."""
    if shape == "circle":
        return dy**2 + dx**2 <= r**2
    if shape == "square":
        return (np.abs(dy) <= 0.8 * r) & (np.abs(dx) <= 0.8 * r)
    if shape == "triangle":  # apex up
        return (dy >= -r) & (dy <= 0.8 * r) & (np.abs(dx) <= (dy + r) * 0.53)
    if shape == "cross":
        w = max(1.0, 0.3 * r)
        return ((np.abs(dx) <= w) & (np.abs(dy) <= r)) | ((np.abs(dy) <= w) & (np.abs(dx) <= r))
    raise ValueError(f"unknown shape {shape!r}")


def render_clip(objs: list[SynthObject], size: int, num_frames: int) -> np.ndarray:
    """uint8 [F, S, S, 3] frames of one clip."""
    frames = np.empty((num_frames, size, size, 3), np.uint8)
    frames[:] = BACKGROUND
    grid = np.arange(size, dtype=np.float64)
    for o in sorted(objs, key=lambda o: -o.radius):  # small objects on top: never hidden by large ones
        for f, (cy, cx) in enumerate(trajectory(o, size, num_frames)):
            if np.isnan(cy):
                continue
            y0, y1 = max(0, int(cy - o.radius) - 1), min(size, int(cy + o.radius) + 2)  # bounding box
            x0, x1 = max(0, int(cx - o.radius) - 1), min(size, int(cx + o.radius) + 2)
            mask = shape_mask(o.shape, grid[y0:y1, None] - cy, grid[None, x0:x1] - cx, o.radius)  # [h, w]
            frames[f, y0:y1, x0:x1][mask] = COLOURS[o.colour]
    return frames
