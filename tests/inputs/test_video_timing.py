"""Frame timing and tags: gaps in timestamps, the legacy rotate tag, key ties, late starts."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from media import index_of, make_video, pixels, plain_decode

from sapiens2_cli.inputs.video.decoder import FrameDecoder
from sapiens2_cli.inputs.video.probe import probe

decode = FrameDecoder().decode  # kept open between calls, as in a decode worker


@pytest.mark.parametrize("container", ["mkv", "mp4"])
def test_a_rate_after_a_gap_in_timestamps_keeps_to_the_grid_of_the_first_frame(tmp_path, container):
    # Variable frame rate and dropped frames: 10 fps, then nothing for 2 s, then uneven.
    # At 2 fps the targets are 0, 0.5, 1.0, ... s after the first frame (at 1.25 s), so
    # by hand: 0 -> frame 0; 0.5, 1.0, 1.5, 2.0 -> frame 4 (2.35); 2.5 -> frame 6 (2.55);
    # 3.0 -> frame 9 (exactly 3.0); 3.5 -> frame 11 (3.55).
    # Catches: targets counted from the last kept frame (2.35 + 0.5 -> frame 8), one target
    # per kept frame (frames 4, 5, 6... after the gap), targets from t=0 of the file
    # (1.5 s -> frame 3), nearest instead of first at or after, float error at 3.0.
    after_first = [0, 100, 200, 300, 2350, 2450, 2550, 2650, 2990, 3000, 3400, 3550]
    times = [Fraction(1250 + ms, 1000) for ms in after_first]
    path = make_video(tmp_path / f"vfr.{container}", times=times, gop=4)
    found = probe(str(path), fps=2)
    assert [f.index for f in found.frames] == [0, 4, 6, 9, 11]
    assert [f.fragment for f in found.frames] == [
        "t=0.000", "t=2.350", "t=2.550", "t=3.000", "t=3.550",
    ]  # fmt: skip
    assert found.total == 12 and found.damage is None
    got = pixels(decode(str(path), found.frames))
    assert [index_of(rgb) for rgb in got.values()] == [0, 4, 6, 9, 11]


@pytest.mark.parametrize(
    ("rotate", "turn", "block"),
    [  # where the stored top-left grey block is shown: (rows, columns) of the 128x96 frame
        ("90", lambda a: a.transpose(1, 0, 2)[:, ::-1], (slice(4, 12), slice(84, 92))),
        ("270", lambda a: a.transpose(1, 0, 2)[::-1], (slice(116, 124), slice(4, 12))),
        ("-90", lambda a: a.transpose(1, 0, 2)[::-1], (slice(116, 124), slice(4, 12))),
        ("180", lambda a: a[::-1, ::-1], (slice(84, 92), slice(116, 124))),
    ],
)
def test_the_legacy_rotate_tag_turns_frames_as_ffmpeg_does(tmp_path, rotate, turn, block):
    # FFmpeg's autorotate: rotate=90 is shown turned clockwise (transpose=clock), 270
    # counter-clockwise (transpose=cclock), 180 flipped both ways. Matroska keeps the tag
    # upper-cased (ROTATE). Catches: the tag missed for its case, 90 and 270 swapped.
    path = make_video(tmp_path / "old.mkv", frames=4, tags={"rotate": rotate})
    raw = plain_decode(path)
    got = pixels(decode(str(path), probe(str(path), fps=None).frames))
    for i, rgb in got.items():
        np.testing.assert_array_equal(rgb, turn(raw[i]))
        assert round((float(rgb[block].mean()) - 8) / 6) == i  # the block, by hand


def test_frame_index_in_a_key_does_not_depend_on_the_rate(tmp_path):
    # Frames 2 and 3 are 0.4 ms apart: both t=0.200, so both keys get &frame=. At 5 fps
    # only frame 2 is kept, and its key must be the one every-frame gives it, or a
    # resume or a merge would take it for another frame. Catches: ties counted among the
    # kept frames only.
    times = [Fraction(ms, 10000) for ms in (0, 1000, 2000, 2004, 3000, 4000)]
    path = str(make_video(tmp_path / "tie.mp4", times=times))
    every = {f.index: f.key(path) for f in probe(path, fps=None).frames}
    assert every[2] == f"{path}#t=0.200&frame=2" and every[3] == f"{path}#t=0.200&frame=3"
    sampled = probe(path, fps=5).frames
    assert [f.index for f in sampled] == [0, 2, 5]
    assert [f.key(path) for f in sampled] == [every[0], every[2], every[5]]


@pytest.mark.parametrize(
    ("name", "start", "audio"),
    [("late.mkv", 1.0, None), ("late.webm", 2.5, None), ("behind_audio.mkv", 10.0, (0, 13))],
)
def test_a_video_starting_late_is_not_taken_for_a_truncated_one(tmp_path, name, start, audio):
    # Matroska's DURATION tag is the track's end time (start + length). Catches: comparing
    # that end with the length from the first frame ("video stops at t=2.900 s after 30
    # frames: the container declares 4.000 s"), a false failure --strict exits 3 on.
    codec = "libvpx-vp9" if name.endswith(".webm") else "libx264"
    times = [Fraction(start).limit_denominator() + Fraction(i, 10) for i in range(30)]
    path = make_video(tmp_path / name, times=times, codec=codec, audio=audio)
    found = probe(str(path), fps=1)
    assert found.damage is None and found.total == 30
    assert [f.timestamp for f in found.frames] == [0.0, 1.0, 2.0]


def test_a_video_starting_late_and_cut_is_still_found_truncated(tmp_path):
    # Catches: the late-start fix silencing real truncation (last frame against the
    # container's end on the same clock, reported as a length from the first frame).
    times = [1 + Fraction(i, 10) for i in range(40)]
    whole = make_video(tmp_path / "whole.mkv", times=times).read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(whole[: len(whole) * 6 // 10])
    found = probe(str(cut), fps=None)
    assert 10 < found.total < 40
    last = found.frames[-1].timestamp
    assert found.damage == (
        f"video stops at t={last:.3f} s after {found.total} frames: the container declares 4.000 s"
    )
