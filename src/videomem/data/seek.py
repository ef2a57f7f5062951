"""Frame-exact seeking in a long local video: decode only the frames that are kept (PyAV).

``decode_by_seeking(path, num_frames, size)`` returns the same frames as decoding the whole video in
order and keeping frames ``sample_indices(n, num_frames)`` (video.py's sequential PyAV reader, kept
as the reference), but decodes only from the keyframe before each kept frame up to it.

Frame i of a sequential decode is the frame with the i-th smallest presentation timestamp (pts), so
the reader needs every frame's pts before it seeks. It takes them, cheapest first, from:

1. the container's sample table (mp4/mov ``index_entries``: no byte of the video is read), used
   only when the decoder reorders no frame (no B-frames), since the table holds decode timestamps;
2. a walk over the packets (demuxing reads the file but decodes nothing): any container, variable
   frame rate and B-frames included.

Then, for each kept pts in order, it seeks to the keyframe at or before it (unless that keyframe lies
behind what was already decoded: then decoding just goes on) and decodes forward until that exact pts
comes out. Frames the decoder emits before the keyframe after a seek (leading pictures of an open
GOP, decoded without their references) are never kept. Anything unexpected (a pts that never comes
out, a seek that lands after its target, a packet without pts) raises `NotExact`; video.py then
retries with the packet walk and, failing that, decodes sequentially, so the frames are exact
whatever the file.

Deliberately not here: the sampling rule and the sequential reference (video.py), encoding, decord.
"""

from __future__ import annotations

from dataclasses import dataclass

import av
import numpy as np

from videomem.data.video import sample_indices

_AVINDEX_KEYFRAME, _AVINDEX_DISCARD = 1, 2  # libavformat's AVIndexEntry flags


class NotExact(RuntimeError):
    """Seeking could not guarantee the sequential decode's frames for this file (caller falls back)."""


@dataclass
class FrameIndex:
    """Where the frames of a video stream are.

    Attributes:
        pts: int64 [n] presentation timestamps of all frames, ascending (stream time base).
        keyframes: int64 [k] pts of the keyframes, ascending.
        source: ``"header"`` (the container's sample table) or ``"packets"`` (a demux walk).
    """

    pts: np.ndarray
    keyframes: np.ndarray
    source: str


def header_index(stream: av.video.stream.VideoStream) -> FrameIndex | None:
    """The frame index from the container's sample table, or None where it cannot give exact pts.

    Exact only when the table lists every frame (as many entries as the header's frame count) and the
    decoder reorders nothing (then decode order is presentation order and dts == pts).
    """
    if stream.frames <= 0 or stream.codec_context.has_b_frames:
        return None
    entries = stream.index_entries
    if len(entries) != stream.frames:
        return None
    stamps = np.fromiter((e.timestamp for e in entries), dtype=np.int64, count=len(entries))
    flags = np.fromiter((e.flags for e in entries), dtype=np.int64, count=len(entries))
    keep = (flags & _AVINDEX_DISCARD) == 0
    stamps, flags = stamps[keep], flags[keep]
    if len(stamps) == 0 or np.any(np.diff(stamps) <= 0):
        return None
    keyframes = stamps[(flags & _AVINDEX_KEYFRAME) != 0]
    if len(keyframes) == 0:
        return None
    return FrameIndex(pts=stamps, keyframes=keyframes, source="header")


def packet_index(container: av.container.InputContainer, stream) -> FrameIndex:
    """The frame index from a walk over the stream's packets (reads the file, decodes nothing).

    Raises:
        NotExact: A packet without pts, two frames with one pts, or no keyframe.
    """
    pts, keys = [], []
    for packet in container.demux(stream):
        if not packet.size:
            continue  # the demuxer's end-of-stream flush packet
        if packet.pts is None:
            raise NotExact("a packet has no pts")
        pts.append(packet.pts)
        if packet.is_keyframe:
            keys.append(packet.pts)
    stamps = np.sort(np.asarray(pts, dtype=np.int64))
    if len(stamps) == 0 or np.any(np.diff(stamps) == 0) or not keys:
        raise NotExact("no frames, repeated pts or no keyframe in the packets")
    return FrameIndex(pts=stamps, keyframes=np.sort(np.asarray(keys, dtype=np.int64)), source="packets")


def _seek_decode(
    container: av.container.InputContainer, stream, index: FrameIndex, targets: list[int], kw: dict
) -> dict[int, np.ndarray]:
    """Frames [H, W, 3] of the ``targets`` pts (ascending, unique), by seeking (module docstring)."""
    out: dict[int, np.ndarray] = {}
    frames, decoded_to = None, None  # the decoder's output since the last seek, and how far it got
    for target in targets:
        k = int(np.searchsorted(index.keyframes, target, side="right")) - 1  # keyframe at or before it
        if frames is not None and k >= 0 and index.keyframes[k] <= decoded_to:
            decoded_to = _decode_to(frames, target, True, kw, out)  # no keyframe in between: go on
            continue
        # A demuxer that seeks by decode time can land one keyframe late: then go one further back.
        decoded_to = None
        for j in range(k, max(k - 3, -1), -1):
            container.seek(int(index.keyframes[j]), stream=stream, backward=True, any_frame=False)
            frames = container.decode(stream)
            decoded_to = _decode_to(frames, target, False, kw, out)
            if decoded_to is not None:
                break
        if decoded_to is None:
            raise NotExact(f"no seek landed at or before pts {target}")
    return out


def _decode_to(frames, target: int, started: bool, kw: dict, out: dict) -> int | None:
    """Decode until ``target`` comes out (stored in ``out``); its pts, or None if the seek landed after it.

    ``started``: a keyframe was already emitted since the last seek (frames before the first one are
    leading pictures, never kept).

    Raises:
        NotExact: The decoder skipped past ``target`` after a keyframe, or ended before it.
    """
    for frame in frames:
        if not started:
            if not frame.key_frame:
                continue
            started = True
            if frame.pts is not None and frame.pts > target:
                return None
        if frame.pts is None:
            raise NotExact("a decoded frame has no pts")
        if frame.pts == target:
            out[target] = frame.to_ndarray(format="rgb24", **kw)
            return frame.pts
        if frame.pts > target:
            raise NotExact(f"the decoder went from before pts {target} to {frame.pts}")
    raise NotExact(f"the video ended before pts {target}")


def decode_by_seeking(
    path: str, num_frames: int, size: tuple[int, int] | None, *, index: str = "auto"
) -> tuple[np.ndarray, str]:
    """Frames ``sample_indices(n, num_frames)`` of a local video, decoding only up to each from its keyframe.

    Args:
        path: A local video file.
        num_frames: k, frames wanted (centred uniform over the n frames; video.py's rule).
        size: Output (H, W) at decode time, or None for the native size.
        index: ``"auto"`` (the sample table where it is exact, else a packet walk) or ``"packets"``.

    Returns:
        (uint8 [k, H, W, 3], the index source used: ``"header"`` or ``"packets"``).

    Raises:
        NotExact: The frames could not be guaranteed equal to a sequential decode (fall back to one).
    """
    kw = {} if size is None else {"height": size[0], "width": size[1]}
    with av.open(path) as container:
        stream = container.streams.video[0]
        # One decoding thread: frame threads restart at every seek (measured on 640x360 H.264: 1.3 s
        # single-threaded, 2.0 s with frame threads for 128 frames of an hour); import workers are
        # processes.
        table = header_index(stream) if index == "auto" else None
        frame_index = table if table is not None else packet_index(container, stream)
        # n as the sequential reader counts it: the header's count where there is one
        n = stream.frames if stream.frames > 0 else len(frame_index.pts)
        wanted = sample_indices(n, num_frames)
        # an index past the last frame (a header that over-counts) takes the last frame, as sequentially
        pts = frame_index.pts[np.minimum(wanted, len(frame_index.pts) - 1)]
        found = _seek_decode(container, stream, frame_index, sorted(set(pts.tolist())), kw)
    return np.stack([found[p] for p in pts.tolist()]), frame_index.source
