"""Videos: which frames a rate keeps, keys, seeking decode, rotation, damage, refusals.

Every clip is made here with PyAV from a real photo (tests/media.py): frame i shows a grey
block of level 8 + 6i, so a decoded picture says which frame it is; libx264 clips have
B-frames (decode order != presentation order) and a keyframe every 12 frames.
"""

from __future__ import annotations

import os
import shutil
from fractions import Fraction

import av
import numpy as np
import pytest
from media import frame_pixels, index_of, make_video, pixels, plain_decode
from PIL import Image

from sapiens2_cli.inputs.decode import decode_image, fit
from sapiens2_cli.inputs.video.decoder import FrameDecoder
from sapiens2_cli.inputs.video.probe import DEFAULT_FPS, VideoError, probe
from sapiens2_cli.inputs.video.source import VideoSource

decoder = FrameDecoder()  # one for the whole module, as a decode worker keeps its reader's
decode = decoder.decode


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """The same 40 frames at 10 fps in four containers and two codecs. MPEG-TS has no frame
    index: its seeks land by byte estimate, often after the frame asked for."""
    folder = tmp_path_factory.mktemp("clips")
    return {
        "mp4": make_video(folder / "clip.mp4"),
        "mkv": make_video(folder / "clip.mkv"),
        "avi": make_video(folder / "clip.avi", codec="mpeg4"),
        "ts": make_video(folder / "clip.ts", gop=4),
    }


@pytest.mark.parametrize("container", ["mp4", "mkv", "avi", "ts"])
def test_rate_keeps_the_first_frame_at_or_after_each_target(clips, container):
    # Catches: nearest/floor instead of first-at-or-after, float error at whole seconds
    # (frame 10 is exactly t=1.0), counting frames in packet (decode) order, not by time.
    found = probe(str(clips[container]), fps=3)
    assert [f.index for f in found.frames] == [0, 4, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37]
    assert [f.timestamp for f in found.frames] == pytest.approx(
        [f.index / 10 for f in found.frames]
    )
    assert [f.fragment for f in found.frames][:4] == ["t=0.000", "t=0.400", "t=0.700", "t=1.000"]
    assert found.total == 40 and found.damage is None


def test_timestamps_are_presentation_times(clips):
    # Catches: timestamps taken from DTS (negative/shifted with B-frames) or packet order.
    found = probe(str(clips["mp4"]), fps=None)
    assert [f.timestamp for f in found.frames] == pytest.approx([i / 10 for i in range(40)])


def test_every_frame_and_the_default_rate(clips):
    # Catches: every-frame dropping or repeating frames; a default that is not documented.
    every = probe(str(clips["mkv"]), fps=None)
    assert [f.index for f in every.frames] == list(range(40))
    keys = [f.key("clip.mkv") for f in every.frames]
    assert len(set(keys)) == 40 and keys[12] == "clip.mkv#t=1.200"
    assert DEFAULT_FPS == 1.0
    assert [f.index for f in probe(str(clips["mkv"])).frames] == [0, 10, 20, 30]


def test_a_rate_above_the_video_rate_keeps_each_frame_once(clips):
    # Catches: a frame that is first for several targets kept several times.
    assert [f.index for f in probe(str(clips["mp4"]), fps=25).frames] == list(range(40))
    assert [f.index for f in probe(str(clips["mp4"]), fps=Fraction(5, 2)).frames] == [
        0, 4, 8, 12, 16, 20, 24, 28, 32, 36,
    ]  # fmt: skip


@pytest.mark.parametrize("container", ["mp4", "mkv", "avi", "ts"])
@pytest.mark.parametrize("span", [(17, 23), (24, 40), (0, 5), (39, 40)])
def test_a_run_of_frames_decodes_to_exactly_those_frames(clips, container, span):
    # Catches: seeking to the wanted frame itself (not the keyframe before: garbage or a
    # missing frame), trusting a seek that landed late (ts), an off-by-one at the first or
    # last wanted frame, frames out of order.
    path = clips[container]
    full = plain_decode(path)
    wanted = probe(str(path), fps=None).frames[span[0] : span[1]]
    got = pixels(decode(str(path), wanted))
    assert list(got) == list(range(*span))
    for i, rgb in got.items():
        np.testing.assert_array_equal(rgb, full[i])
        assert index_of(rgb) == i


def test_sampled_frames_decode_to_the_right_pictures(clips):
    # Catches: matching decoded pictures to wanted frames by position instead of time when
    # frames in between are not wanted.
    wanted = probe(str(clips["mp4"]), fps=3).frames[4:9]  # frames 14, 17, 20, 24, 27
    got = pixels(decode(str(clips["mp4"]), wanted))
    assert [index_of(rgb) for rgb in got.values()] == [14, 17, 20, 24, 27]


@pytest.mark.parametrize(
    ("rotation", "expected"),
    [
        ((90, False, False), lambda a: np.rot90(a, 1)),  # counter-clockwise, as PyAV says
        ((270, False, False), lambda a: np.rot90(a, -1)),
        ((180, False, False), lambda a: a[::-1, ::-1]),
        ((0, True, False), lambda a: a[:, ::-1]),
        ((90, True, False), lambda a: np.rot90(a, 1)[:, ::-1]),
    ],
)
def test_the_display_matrix_is_applied(tmp_path, rotation, expected):
    # Catches: rotation ignored, clockwise and counter-clockwise swapped, flips ignored.
    if not hasattr(av.video.stream.VideoStream, "set_display_rotation"):
        pytest.skip("this PyAV cannot write a display matrix (set_display_rotation, PyAV 17+)")
    path = make_video(tmp_path / "phone.mp4", frames=6, rotation=rotation)
    raw = plain_decode(path)  # plain PyAV leaves the matrix alone
    got = pixels(decode(str(path), probe(str(path), fps=None).frames))
    for i, rgb in got.items():
        np.testing.assert_array_equal(rgb, expected(raw[i]))
        assert rgb.flags.c_contiguous


@pytest.mark.parametrize("name", ["cut.mkv", "cut.mp4"])
def test_a_truncated_video_keeps_the_frames_before_the_cut(tmp_path, name):
    # Catches: a truncated video passing silently (no failure to record), or its readable
    # frames lost. mp4 needs its index at the front (faststart) to be readable at all.
    whole = make_video(tmp_path / f"whole{name[-4:]}", faststart=True)
    full = plain_decode(whole)
    data = whole.read_bytes()
    cut = tmp_path / name
    cut.write_bytes(data[: len(data) * 6 // 10])
    found = probe(str(cut), fps=None)
    assert found.damage and "video stops at t=" in found.damage and "\n" not in found.damage
    assert 10 < found.total < 40
    got = pixels(decode(str(cut), found.frames))
    assert list(got) == list(range(found.total))
    for i, rgb in got.items():
        np.testing.assert_array_equal(rgb, full[i])


def test_damage_met_while_decoding_yields_the_frames_then_one_reason(tmp_path):
    # The file is cut after it was probed (as if it changed, or the damage is only found
    # by decoding). Catches: raising out of the reader, a reason per lost frame, decoded
    # frames thrown away.
    path = make_video(tmp_path / "clip.mkv")
    frames = probe(str(path), fps=None).frames
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    results = list(decode(str(path), frames[5:]))
    *decoded, last = results
    assert isinstance(last, str) and "video ends early" in last and "\n" not in last
    assert [r[0].index for r in decoded] == list(range(5, 5 + len(decoded)))
    assert 5 < len(decoded) < 35 and all(not isinstance(r[1], str) for r in decoded)


def test_a_truncated_mp4_without_its_index_is_refused(tmp_path):
    # The moov index is written last by default: cut, nothing can be located.
    whole = make_video(tmp_path / "whole.mp4").read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(VideoError, match="not a video, or truncated"):
        probe(str(cut))


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"hello, not a video\n" * 40, "not a video"),
        (b"", "not a video"),
        ("photo", "not a video (a still image"),
        (None, "file not found"),
    ],
)
def test_a_file_that_is_not_a_video_is_refused_in_one_line(tmp_path, content, reason):
    # Catches: a still image taken as a one-frame video; an exception type the pipeline
    # does not turn into a failure record; multi-line reasons.
    path = tmp_path / "x.mp4"
    if content == "photo":
        Image.fromarray(frame_pixels(0)).save(path, format="JPEG")
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(VideoError) as caught:
        probe(str(path))
    assert reason in str(caught.value) and "\n" not in str(caught.value)


def test_decode_of_a_file_gone_bad_never_raises(tmp_path, clips):
    frames = probe(str(clips["mp4"]), fps=1).frames
    path = tmp_path / "gone.mp4"
    path.write_bytes(b"garbage")
    (reason,) = decode(str(path), frames)
    assert isinstance(reason, str) and "video decoding failed" in reason


def test_frames_within_one_millisecond_get_the_frame_index_in_their_key(tmp_path):
    # 2000 fps: frames 0.5 ms apart round to the same millisecond in pairs.
    # Catches: duplicate keys (a resume would take one frame for the other).
    path = make_video(tmp_path / "fast.mp4", frames=6, rate=2000, codec="mpeg4")
    frames = probe(str(path), fps=None).frames
    keys = [f.key("v") for f in frames]
    assert len(set(keys)) == 6
    tagged = [f for f in frames if "&frame=" in f.fragment]
    assert tagged and all(f.fragment.endswith(f"&frame={f.index}") for f in tagged)
    plain = [f.fragment for f in frames if "&frame=" not in f.fragment]
    assert len(plain) == len(set(plain))


@pytest.mark.parametrize("resize", ["stretch", "letterbox"])
def test_fit_resizes_a_frame_as_a_photo_of_the_same_pixels(tmp_path, resize):
    # Catches: video frames resized differently from photos (another filter, another
    # letterbox rounding), which would break parity with extracted frames.
    rgb = frame_pixels(3, 90, 130)
    Image.fromarray(rgb).save(tmp_path / "frame.png")
    photo = decode_image(str(tmp_path / "frame.png"), (64, 48), resize)
    frame = fit(Image.fromarray(rgb), (64, 48), resize)
    np.testing.assert_array_equal(frame.pixels, photo.pixels)
    assert (frame.original_size, frame.content_box) == (photo.original_size, photo.content_box)


@pytest.mark.parametrize("container", ["mp4", "mkv", "avi", "ts"])
def test_runs_in_sequence_decode_on_from_where_the_last_stopped(clips, container):
    # As one decode worker gets a video's frames: runs of 5, in order, sometimes cut short
    # by its reader. Catches: a frame lost or repeated where a run continues the last one,
    # the kept decoder not used (each run seeking back and decoding its stretch again).
    path = str(clips[container])
    full = plain_decode(clips[container])
    frames = probe(path, fps=None).frames
    got = {}
    for start in range(0, 40, 5):
        results = decode(path, frames[start : start + 5])
        got.update(pixels([next(results)]))  # the reader may stop after any frame...
        if start == 10:
            results.close()  # ...as when its worker stops, and the run comes again:
            got.update(pixels(decode(path, frames[start : start + 5])))  # from a new seek
        else:
            got.update(pixels(results))
        if start in (0, 10):
            cursor = decoder.cursor
        assert decoder.cursor is cursor, f"the open decoder was not reused at frame {start}"
    assert list(got) == list(range(40))
    for i, rgb in got.items():
        np.testing.assert_array_equal(rgb, full[i])


def test_the_kept_decoder_is_not_used_for_another_file_or_going_back(clips, tmp_path):
    # Catches: pictures of the previous file, or of later frames, returned for a run
    # that does not follow the last one; a file replaced under the same name.
    mp4, mkv = str(clips["mp4"]), str(clips["mkv"])
    mp4_frames, mkv_frames = probe(mp4, None).frames, probe(mkv, None).frames
    full = plain_decode(clips["mp4"])
    order = [(mp4, 20, 24), (mkv, 24, 28), (mp4, 24, 28), (mp4, 2, 6), (mp4, 36, 40)]
    for path, start, stop in order:
        frames = (mp4_frames if path == mp4 else mkv_frames)[start:stop]
        got = pixels(decode(path, frames))
        assert list(got) == list(range(start, stop))
        for i, rgb in got.items():
            assert index_of(rgb) == i
            if path == mp4:
                np.testing.assert_array_equal(rgb, full[i])
    copy = tmp_path / "v.mp4"
    shutil.copy(clips["mp4"], copy)
    frames = probe(str(copy), None).frames
    assert list(pixels(decode(str(copy), frames[:3]))) == [0, 1, 2]
    make_video(copy, frames=40, gop=40)  # rewritten in place: another file now
    frames = probe(str(copy), None).frames
    got = pixels(decode(str(copy), frames[3:6]))
    np.testing.assert_array_equal(got[3], plain_decode(copy)[3])


def test_no_decoding_threads_survive_into_a_fork(clips):
    # Decode workers are forked; a fork taken while FFmpeg's threads run can inherit a
    # lock one of them held and hang (it did, at random, in this suite). Catches: the open
    # decoder kept across a fork, or its threads left to the garbage collector.
    def threads() -> int:
        return len(os.listdir("/proc/self/task"))

    before = threads()
    path = str(clips["mkv"])
    list(decode(path, probe(path, None).frames[:5], threads=4))
    assert threads() > before and decoder.cursor is not None
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    assert decoder.cursor is None and threads() <= before


def test_one_source_reads_every_video_through_one_decoder(clips):
    """Catches a reader (and so an open decoder) per expansion: a folder mixing photos and
    videos is expanded in several runs, and each run's reader kept a video open in every
    decode worker."""
    source = VideoSource(1.0)
    first, second = (source.expand([str(clips[name])]).items for name in ("mp4", "mkv"))
    assert first and second and first[0].reader is second[0].reader
