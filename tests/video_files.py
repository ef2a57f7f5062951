"""Video files the tests and benchmarks make themselves (PyAV's bundled libx264: no system ffmpeg).

Every frame carries its own index as a row of black/white blocks (and a bar that moves), so two frames
never look alike and a decoder that returns the wrong frame is caught by an exact comparison.
"""

from __future__ import annotations

import os
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

#: Where benchmarks cache the files they generate (outside the repository; reused across runs).
CACHE = Path(os.environ.get("VIDEOMEM_BENCH_CACHE", Path(tempfile.gettempdir()) / "videomem-bench"))


def write_test_video(
    path: str | Path,
    num_frames: int,
    *,
    fps: int = 25,
    size: tuple[int, int] = (180, 320),
    gop: int = 30,
    bframes: int = 3,
    open_gop: bool = False,
    variable_rate: bool = False,
    container: str | None = None,
    preset: str = "veryfast",
    crf: int = 30,
    seed: int = 0,
) -> Path:
    """Encode an H.264 test video frame by frame (constant memory, any length).

    Args:
        path: Output file; the extension picks the container unless ``container`` names one.
        num_frames: Frames to write.
        fps: Nominal frame rate (each frame lasts 1/fps unless ``variable_rate``).
        size: (H, W), even.
        gop: Keyframe interval in frames (no scene-cut keyframes).
        bframes: x264 B-frames (0: no reordering).
        open_gop: Open GOPs (keyframes that are not IDR: leading pictures after them).
        variable_rate: Frame durations drawn from 20, 33, 40 and 67 ms (a variable-frame-rate file).
        container: Format name for PyAV (e.g. "matroska"), or None to infer from the extension.
        preset, crf: x264 speed preset and quality.
        seed: Seed of the variable frame durations.
    """
    height, width = size
    rng = np.random.default_rng(seed)
    params = f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes={bframes}"
    params += ":open-gop=1" if open_gop else ""
    time_base = Fraction(1, 1000)
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": preset, "crf": str(crf), "x264-params": params}
        stream.time_base = stream.codec_context.time_base = time_base
        planes = np.full((height * 3 // 2, width), 60, np.uint8)  # yuv420p: Y rows, then U and V
        planes[height:] = 128
        pts = 0
        for i in range(num_frames):
            frame = planes.copy()
            x = (i * 5) % (width - 32)
            frame[height // 3 : height // 3 + 40, x : x + 32] = 220
            for bit in range(min(20, width // 16 - 1)):
                frame[8:24, 8 + 16 * bit : 24 + 16 * bit] = 235 if (i >> bit) & 1 else 16
            video_frame = av.VideoFrame.from_ndarray(frame, format="yuv420p")
            video_frame.pts, video_frame.time_base = pts, time_base
            pts += int(rng.choice([20, 33, 40, 67])) if variable_rate else 1000 // fps
            out.mux(stream.encode(video_frame))
        out.mux(stream.encode())
    return Path(path)


def long_video(minutes: int, size: tuple[int, int] = (360, 640), fps: int = 25) -> Path:
    """A ``minutes``-long H.264 video in ``CACHE`` (made once, ~75 s for an hour at 640x360 on one core).

    x264 ultrafast at crf 35 with a keyframe every 5 s, as a long real video is often encoded.
    """
    path = CACHE / f"long_{minutes}min_{size[1]}x{size[0]}_{fps}fps.mp4"
    if not path.is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".part.mp4")
        write_test_video(tmp, minutes * 60 * fps, fps=fps, size=size, gop=5 * fps, bframes=0,
                         preset="ultrafast", crf=35)  # fmt: skip
        os.replace(tmp, path)
    return path
