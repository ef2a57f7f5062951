"""Video bytes in and out: H.264 encoding, frame decoding behind one interface, long-video segmentation.

Every other module touches video only through three functions:
- `encode_mp4` turns frames into a small H.264/yuv420p mp4 (PyAV's bundled libx264, no system ffmpeg);
- `decode_frames` samples `num_frames` frames uniformly from an mp4 (bytes or path), resized at decode
  time, with one of two backends: "decord" (fast, seeks; unmaintained upstream) or "pyav" (sequential,
  robust). Both return the same layout [F, H, W, 3] uint8 and raise `VideoDecodeError` for unreadable
  input, so a corrupt sample never surfaces as a backend-specific crash;
- `segment_video` reads the T x F frames it keeps from a long local video and re-encodes them as T
  equal-duration clips, each its own mp4 starting on a keyframe (what the shards store). It seeks
  (seek.py): only the frames from the keyframe before each kept frame up to it are decoded, and the
  frames are exactly those of decoding the whole video in order (the PyAV reader, kept as the reference).

Sampling rule (one rule everywhere): frame i of k is source index floor((i + 0.5) * n / k) (centred
uniform); when the clip has fewer frames than asked (n < k), all n frames then the last one repeated.
Sampling is by frame index, so variable-frame-rate sources are sampled uniformly in frames, not time.

Deliberately not here: colour normalisation, patching or any model-specific resizing rule (the model
layer asks for the (H, W) it needs), audio, subtitles.
"""

from __future__ import annotations

import io
import logging
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

BACKENDS = ("decord", "pyav")
log = logging.getLogger(__name__)


class VideoDecodeError(RuntimeError):
    """Raised for empty, truncated or otherwise unreadable video input (wraps backend errors)."""


def sample_indices(num_total: int, num_frames: int | None) -> np.ndarray:
    """Centred uniform frame indices.

    Args:
        num_total: Number of frames in the source (n >= 1).
        num_frames: Number of frames wanted (k), or None for all frames.

    Returns:
        int64 array [k]: floor((i + 0.5) * n / k); for n < k: 0..n-1 then n-1 repeated.
    """
    if num_total < 1:
        raise VideoDecodeError("video has no frames")
    if num_frames is None:
        return np.arange(num_total, dtype=np.int64)
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if num_total >= num_frames:
        return ((np.arange(num_frames) + 0.5) * num_total / num_frames).astype(np.int64)
    tail = np.full(num_frames - num_total, num_total - 1, dtype=np.int64)
    return np.concatenate([np.arange(num_total, dtype=np.int64), tail])


def encode_mp4(frames: np.ndarray | torch.Tensor, fps: float, *, crf: int = 12) -> bytes:
    """Encode frames as an H.264 (libx264, yuv420p) mp4; the first frame is a keyframe.

    Args:
        frames: uint8 [F, H, W, 3] RGB frames; H and W must be even (yuv420p).
        fps: Frame rate written to the container (sets the clip's duration F / fps).
        crf: x264 constant rate factor; 12 keeps synthetic frames within ~1 grey level of the input.

    Returns:
        The mp4 file as bytes.
    """
    if isinstance(frames, torch.Tensor):
        frames = frames.cpu().numpy()
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise ValueError(f"frames must be [F, H, W, 3] with F >= 1, got {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frames.dtype}")
    _, height, width, _ = frames.shape
    if height % 2 or width % 2:
        raise ValueError(f"H.264 yuv420p needs even frame sides, got {height}x{width}")
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        # Byte-identical output run to run: one thread, and no macroblock-tree rate control (with mbtree,
        # 5-10% of clips changed bytes between runs on a busy machine, even single-threaded).
        stream.options = {
            "crf": str(crf),
            "preset": "veryfast",
            "x264-params": "threads=1:lookahead-threads=1:sliced-threads=0:no-mbtree=1",
        }
        stream.codec_context.thread_count = 1
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return buf.getvalue()


def _as_file(src: bytes | str | Path) -> io.BytesIO | str:
    if isinstance(src, (bytes, bytearray, memoryview)):
        if len(src) == 0:
            raise VideoDecodeError("empty video bytes")
        return io.BytesIO(bytes(src))
    path = Path(src)
    if not path.is_file():
        raise VideoDecodeError(f"no such video file: {path}")
    return str(path)


def _read_decord(src: bytes | str | Path, num_frames: int | None, size: tuple[int, int] | None) -> np.ndarray:
    import decord  # imported lazily: the PyAV backend must work where decord is missing

    height, width = size if size is not None else (-1, -1)
    reader = decord.VideoReader(_as_file(src), width=width, height=height, num_threads=1)
    idx = sample_indices(len(reader), num_frames)
    try:
        return reader.get_batch(idx.tolist()).asnumpy()  # [F, H, W, 3]
    except decord.DECORDError:
        if size is None:
            raise
    # decord 0.6 mis-copies some output widths (16, 24, 48, 72, ...: "size must exactly match");
    # multiples of 28 and 32 are fine. Decode natively and resize with torch instead.
    native = decord.VideoReader(_as_file(src), num_threads=1).get_batch(idx.tolist()).asnumpy()
    return _resize(native, size)


def _resize(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear (antialiased) resize of uint8 [F, h, w, 3] frames to [F, H, W, 3]."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()  # [F, 3, h, w]
    x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()  # [F, H, W, 3]


def _pyav_frame_count(src: bytes | str | Path) -> int:
    with av.open(_as_file(src)) as container:
        stream = container.streams.video[0]
        if stream.frames > 0:
            return stream.frames
        return sum(1 for packet in container.demux(stream) if packet.size)  # containers without nb_frames


def _read_pyav(src: bytes | str | Path, num_frames: int | None, size: tuple[int, int] | None) -> np.ndarray:
    idx = sample_indices(_pyav_frame_count(src), num_frames)
    wanted: dict[int, np.ndarray | None] = dict.fromkeys(idx.tolist())
    last_needed = int(idx.max())
    kw = {} if size is None else {"height": size[0], "width": size[1]}
    last = None
    with av.open(_as_file(src)) as container:
        stream = container.streams.video[0]
        if stream.codec_context.width * stream.codec_context.height >= 640 * 360:
            stream.thread_type = "AUTO"  # frame threads pay off only on large frames
        for i, frame in enumerate(container.decode(stream)):
            last = frame
            if i in wanted:
                wanted[i] = frame.to_ndarray(format="rgb24", **kw)
            if i >= last_needed:
                break
    if last is None:
        raise VideoDecodeError("no frame could be decoded")
    filler = None
    for i, arr in wanted.items():  # the header over-counted frames: repeat the last decoded one
        if arr is None:
            filler = filler if filler is not None else last.to_ndarray(format="rgb24", **kw)
            wanted[i] = filler
    return np.stack([wanted[i] for i in idx.tolist()])  # [F, H, W, 3]


def decode_frames(
    src: bytes | str | Path,
    *,
    num_frames: int | None = None,
    size: tuple[int, int] | None = None,
    backend: str = "decord",
) -> torch.Tensor:
    """Decode uniformly sampled frames, resized at decode time.

    Args:
        src: mp4 bytes or a path to any video file.
        num_frames: Number of frames to sample (see module docstring), None for all frames.
        size: Output (H, W), or None for the native size.
        backend: "decord" or "pyav".

    Returns:
        uint8 tensor [F, H, W, 3].

    Raises:
        VideoDecodeError: Unreadable, empty or truncated input (any backend error is wrapped).
    """
    readers = {"decord": _read_decord, "pyav": _read_pyav}
    if backend not in readers:
        raise ValueError(f"unknown video backend {backend!r}; expected one of {BACKENDS}")
    try:
        frames = readers[backend](src, num_frames, size)
    except VideoDecodeError:
        raise
    except Exception as err:  # decord raises DECORDError/RuntimeError, PyAV FFmpegError/IndexError...
        raise VideoDecodeError(f"{backend} could not decode video: {type(err).__name__}: {err}") from err
    if frames.ndim != 4 or frames.shape[0] == 0:
        raise VideoDecodeError(f"{backend} returned no frames (shape {frames.shape})")
    return torch.from_numpy(np.ascontiguousarray(frames))  # [F, H, W, 3]


def _header_facts(src: bytes | str | Path) -> dict:
    """What the container's header says, nothing walked: frames (0 if absent), fps (0.0 if absent),
    height, width and duration (None if absent)."""
    with av.open(_as_file(src)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0.0)
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            duration = None
        return {
            "num_frames": max(stream.frames, 0),
            "fps": fps,
            "height": stream.codec_context.height,
            "width": stream.codec_context.width,
            "duration": duration,
        }


def probe_video(src: bytes | str | Path) -> dict:
    """Header facts of a video: frame count, fps, native size and duration in seconds (PyAV).

    Everything comes from the container's header; only a container without a frame count (mkv, webm)
    has its packets counted (read, not decoded).

    Returns:
        {"num_frames": int, "fps": float, "height": int, "width": int, "duration": float}
    """
    try:
        info = _header_facts(src)
        num = info["num_frames"] or _pyav_frame_count(src)
    except VideoDecodeError:
        raise
    except Exception as err:
        raise VideoDecodeError(f"cannot probe video: {type(err).__name__}: {err}") from err
    fps, duration, height, width = info["fps"], info["duration"] or 0.0, info["height"], info["width"]
    if num < 1 or height < 1 or width < 1:
        raise VideoDecodeError(f"video has no frames or no size ({num} frames, {height}x{width})")
    if fps <= 0:
        fps = num / duration if duration > 0 else 1.0
    if duration <= 0:
        duration = num / fps
    return {"num_frames": num, "fps": fps, "height": height, "width": width, "duration": duration}


def fit_size(height: int, width: int, max_side: int | None) -> tuple[int, int]:
    """Size with the longer side <= max_side (aspect kept, never upscaled) and both sides even."""
    scale = 1.0 if max_side is None else min(1.0, max_side / max(height, width))
    return max(2, round(height * scale) // 2 * 2), max(2, round(width * scale) // 2 * 2)


def read_kept_frames(path: str | Path, num_frames: int, size: tuple[int, int] | None) -> np.ndarray:
    """Frames ``sample_indices(n, num_frames)`` of a local video by seeking (seek.py), exactly those of
    the sequential ``decode_frames(path, backend="pyav")``.

    The container's sample table is tried first, then a walk over the packets; where neither gives a
    guaranteed match the whole video is decoded in order (logged).

    Returns:
        uint8 [num_frames, H, W, 3].
    """
    from videomem.data.seek import NotExact, decode_by_seeking  # seek.py imports this module

    why = ""
    for index in ("auto", "packets"):
        try:
            return decode_by_seeking(str(path), num_frames, size, index=index)[0]
        except NotExact as err:
            why = str(err)
        except av.FFmpegError as err:  # a container that cannot seek
            why = f"{type(err).__name__}: {err}"
            break
    log.warning("seeking in %s is not exact (%s): decoding every frame instead", path, why)
    return _read_pyav(path, num_frames, size)


def segment_video(
    path: str | Path,
    num_clips: int,
    *,
    frames_per_clip: int = 32,
    max_side: int | None = 448,
    backend: str = "seek",
    crf: int = 18,
) -> tuple[list[bytes], list[tuple[float, float]], float]:
    """Split a local video into `num_clips` equal-duration clips, each re-encoded as its own mp4.

    num_clips * frames_per_clip frames are sampled uniformly from the whole video (module docstring);
    clip t holds samples [t * F, (t + 1) * F), which all fall inside its span [t * D / T, (t + 1) * D / T).
    Each clip is written at F / (D / T) fps so its own duration equals its span.

    Args:
        path: Any video file PyAV can open.
        num_clips: T >= 1.
        frames_per_clip: F, frames stored per clip.
        max_side: Longer side of the stored frames (never upscaled), None for native size (made even).
        backend: "seek" decodes only from the keyframe before each kept frame up to it (an hour of
            video costs seconds); "pyav" decodes every frame in order (the reference: same frames);
            "decord" uses decord's batch access (fast, but not exact on variable frame rate files).
        crf: x264 quality of the stored clips.

    Returns:
        (clip mp4 bytes [T], spans [(start_s, end_s)] * T, duration in seconds).
    """
    if num_clips < 1 or frames_per_clip < 1:
        raise ValueError("num_clips and frames_per_clip must be >= 1")
    if backend not in ("seek", *BACKENDS):
        raise ValueError(f"unknown segmentation backend {backend!r}; expected seek, pyav or decord")
    try:
        info = _header_facts(path)
    except Exception:  # noqa: BLE001 - probe_video below says what is wrong, as one VideoDecodeError
        info = None
    if info is None or info["duration"] is None or min(info["height"], info["width"]) < 1:
        info = probe_video(path)  # walks the packets where the header has no duration
    size = fit_size(info["height"], info["width"], max_side)
    total = num_clips * frames_per_clip
    if backend == "seek":
        try:
            frames = torch.from_numpy(read_kept_frames(path, total, size))  # [T*F, H, W, 3]
        except VideoDecodeError:
            raise
        except Exception as err:  # the same wrapping as decode_frames gives the other backends
            raise VideoDecodeError(f"seek could not decode video: {type(err).__name__}: {err}") from err
    else:
        frames = decode_frames(path, num_frames=total, size=size, backend=backend)  # [T*F, H, W, 3]
    duration = info["duration"]
    step = duration / num_clips
    spans = [(t * step, (t + 1) * step) for t in range(num_clips)]
    clip_fps = frames_per_clip / step if step > 0 else 1.0
    clips = [
        encode_mp4(frames[t * frames_per_clip : (t + 1) * frames_per_clip], clip_fps, crf=crf)
        for t in range(num_clips)
    ]
    return clips, spans, duration
