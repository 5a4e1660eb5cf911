"""`extract` on videos: rates, keys, columns, decoding breaks, parity with photos; and on
videos beside photos and tar shards in one run: the walk, damage, parts, a kill inside a
file. What only tar shards do is in test_extract_tar.py.

The command runs in-process (tests/extract_helpers.py) on clips and shards made here from
the real photos in tests/data (tests/media.py), except the kills, which need a subprocess.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from fractions import Fraction

import numpy as np
import pytest
from docs_examples import examples, run_example
from events import Hold, committed_rows, wait_for_rows
from extract_helpers import FAST, extract, extract_subprocess, refusal, summary
from media import make_tar, make_video, plain_decode, webdataset_members
from paths import DATA, copy_photos
from PIL import Image

from sapiens2_cli.inputs.video import source as video
from sapiens2_cli.inputs.video.probe import Probe
from sapiens2_cli.output import open_features


@pytest.fixture
def inputs(tmp_path):
    """A folder of one photo, one clip (40 frames at 10 fps) and two shards."""
    root = copy_photos(tmp_path / "in", ["coffee.jpg"])
    make_video(root / "clip.mp4")
    make_tar(root / "00000.tar", webdataset_members(3))
    make_tar(root / "00001.tar", webdataset_members(2))
    return root.resolve()


def rows(out) -> tuple[list[str], dict[str, np.ndarray], list[tuple[str, str]]]:
    """OUT's keys, columns and failure records."""
    with open_features(out) as f:
        return f.paths, f.columns, f.failed


def test_a_folder_of_photos_videos_and_shards_in_one_run(inputs, tmp_path):
    # Catches: videos or tars left out of a folder walk, wrong keys, columns misaligned
    # with rows (frame_index on a photo), non-image members counted as failures.
    done = summary(inputs, "-o", tmp_path / "f.h5", *FAST)
    keys, columns, failed = rows(tmp_path / "f.h5")
    clip, t0, t1 = str(inputs / "clip.mp4"), str(inputs / "00000.tar"), str(inputs / "00001.tar")
    assert keys == [
        f"{t0}/000000000.png", f"{t0}/000000001.jpg", f"{t0}/000000002.jpg",
        f"{t1}/000000000.png", f"{t1}/000000001.jpg",
        f"{clip}#t=0.000", f"{clip}#t=1.000", f"{clip}#t=2.000", f"{clip}#t=3.000",
        str(inputs / "coffee.jpg"),
    ]  # fmt: skip
    assert columns["frame_index"].tolist() == [-1] * 5 + [0, 10, 20, 30] + [-1]
    np.testing.assert_array_equal(columns["timestamp"][5:9], [0.0, 1.0, 2.0, 3.0])
    assert np.isnan(columns["timestamp"][[0, 9]]).all()
    assert columns["frame_index"].dtype == np.int64 and columns["timestamp"].dtype == np.float64
    assert columns["original_size"][5].tolist() == [96, 128]  # a frame's (H, W)
    assert columns["original_size"][0].tolist() == [128, 128]  # astronaut.png in the tar
    assert failed == []
    assert done["ignored"] == 15 and done["rows"] == 10


def test_every_frame_and_a_rate_and_resume_cannot_mix_them(inputs, tmp_path):
    # Catches: --every-frame/--fps ignored, a resume at another rate mixing two samplings
    # in one output, a resume without the flag not taking OUT's rate.
    out = tmp_path / "f.h5"
    clip = inputs / "clip.mp4"
    summary(clip, "-o", out, "--every-frame", *FAST)
    keys, columns, _ = rows(out)
    assert columns["frame_index"].tolist() == list(range(40)) and len(set(keys)) == 40
    with open_features(out) as f:
        assert f.settings["video_fps"] == 0.0
    assert "--fps/--every-frame (video_fps is 0.0 there, 2.0 now)" in refusal(
        clip, "-o", out, "--fps", "2", *FAST
    )
    assert summary(clip, "-o", out, *FAST)["skipped"] == 40  # OUT's rate: every frame, all done
    other = tmp_path / "g.h5"
    summary(clip, "-o", other, "--fps", "2.5", *FAST)
    assert rows(other)[1]["frame_index"].tolist() == list(range(0, 40, 4))


def test_the_rate_flags_are_checked_before_any_work(inputs, tmp_path):
    out = tmp_path / "f.h5"
    assert "give one" in refusal(inputs, "-o", out, "--fps", "2", "--every-frame", *FAST)
    assert "positive" in refusal(inputs, "-o", out, "--fps", "0", *FAST)
    assert not (tmp_path / "f.h5").exists()


def test_damaged_videos_and_shards_keep_what_came_before_with_one_failure(inputs, tmp_path):
    # Catches: a damaged file losing its good rows, or recorded once per lost row, or not
    # at all; a file that is not a video / tar stopping the run.
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    whole = make_video(tmp_path / "whole.mkv").read_bytes()
    (damaged / "cut.mkv").write_bytes(whole[: len(whole) * 6 // 10])
    shard = (inputs / "00000.tar").read_bytes()
    (damaged / "cut.tar").write_bytes(shard[: len(shard) * 2 // 3])
    (damaged / "text.mp4").write_text("not a video\n" * 50)
    (damaged / "text.tar").write_text("not a tar\n" * 100)
    out = tmp_path / "f.h5"
    result = extract(damaged, "-o", out, "--every-frame", *FAST)
    assert result.exit_code == 0, result.output
    keys, _, failed = rows(out)
    frames = [k for k in keys if "cut.mkv#t=" in k]
    members = [k for k in keys if "cut.tar/" in k]
    assert 10 < len(frames) < 40 and 1 <= len(members) < 3
    reasons = dict(failed)
    assert sorted(reasons) == sorted(str((damaged / n).resolve()) for n in (
        "cut.mkv", "cut.tar", "text.mp4", "text.tar"
    ))  # fmt: skip
    assert "video stops at t=" in reasons[str((damaged / "cut.mkv").resolve())]
    assert "tar damaged after" in reasons[str((damaged / "cut.tar").resolve())]
    assert "not a video" in reasons[str((damaged / "text.mp4").resolve())]
    assert "not a tar file" in reasons[str((damaged / "text.tar").resolve())]


@pytest.mark.parametrize("batch", ["64", "8"])
def test_a_video_that_breaks_while_decoding_is_a_failure_of_the_video(tmp_path, monkeypatch, batch):
    # The clip is cut after it was probed, so the damage is met by the decoder. Catches:
    # the break recorded under the key of the first frame of the run it hit (as if that
    # one frame failed alone, and the frames after it were fine); a frame key per lost frame.
    clip = make_video(tmp_path / "clip.mkv").resolve()
    whole = clip.read_bytes()
    probe = video.probe

    def probe_then_cut(path: str, fps: float | None) -> Probe:
        found = probe(path, fps)
        clip.write_bytes(whole[: len(whole) // 2])
        return found

    monkeypatch.setattr(video, "probe", probe_then_cut)
    out = tmp_path / "f.h5"
    summary(clip, "-o", out, "--every-frame", "--batch-size", batch, *FAST)
    keys, _, failed = rows(out)
    assert 5 < len(keys) < 40
    assert {key for key, _ in failed} == {str(clip)}
    assert all("video ends early" in reason for _, reason in failed)


def test_a_video_starting_after_its_audio_passes_strict(tmp_path):
    # Audio from 0 s, video from 10 s to 13 s: the video track ends where Matroska says.
    # Catches: a false "video stops at t=2.900 s ... declares 13.000 s" failure, which
    # made --strict exit 3 (and was recorded again on every resume).
    times = [10 + Fraction(i, 10) for i in range(30)]
    clip = make_video(tmp_path / "talk.mkv", times=times, audio=(0, 13)).resolve()
    out = tmp_path / "f.h5"
    summary(clip, "-o", out, "--strict", *FAST)
    keys, _, failed = rows(out)
    assert keys == [f"{clip}#t={t}.000" for t in range(3)] and failed == []


def test_parts_of_a_job_take_whole_videos_and_tars(inputs, tmp_path):
    # Catches: a video's frames or a tar's members split between parts (two processes
    # decoding one file, rows of one file in two outputs).
    out = tmp_path / "f.h5"
    for part in ("0/2", "1/2"):
        summary(inputs, "-o", out, "--shard", part, "--every-frame", *FAST)
    files_by_part = []
    for path in sorted((tmp_path / "f.h5.parts").iterdir()):
        keys = rows(path)[0]
        files_by_part.append({k.split("#t=")[0].rsplit(".tar/", 1)[0] for k in keys})
    assert len(files_by_part) == 2  # which part gets a file goes by a hash of its path
    assert not files_by_part[0] & files_by_part[1]
    assert sum(len(rows(p)[0]) for p in (tmp_path / "f.h5.parts").iterdir()) == 5 + 40 + 1


def test_a_frame_has_the_features_of_the_same_frame_saved_as_a_photo(inputs, tmp_path):
    # Catches: frames preprocessed differently from photos (colour conversion, resize,
    # orientation) - the same pixels must give the same features.
    clip = inputs / "clip.mp4"
    frame = plain_decode(clip)[20]
    Image.fromarray(frame).save(tmp_path / "frame20.png")
    for name, args in (("v.h5", [clip]), ("p.h5", [tmp_path / "frame20.png"])):
        summary(*args, "-o", tmp_path / name, "--dtype", "float32", "--batch-size", "1", *FAST)
    with open_features(tmp_path / "v.h5") as video, open_features(tmp_path / "p.h5") as photo:
        row = video.paths.index(f"{clip}#t=2.000")
        np.testing.assert_array_equal(video.read([row]), photo.read([0]))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["video", "tar"])
def test_killed_in_the_middle_of_a_file_resumes_within_it(tmp_path, kind):
    # Catches: a resume that starts the video / tar again (rows twice, or the work redone),
    # or loses the rows after the kill point.
    if kind == "video":
        source = make_video(tmp_path / "long.mkv", frames=40)
        flags = ["--every-frame"]
        total = 40
    else:
        members = [(f"{n:05d}.jpg", (DATA / "chelsea.jpg").read_bytes()) for n in range(40)]
        source = make_tar(tmp_path / "big.tar", members)
        flags, total = [], 40
    reference = tmp_path / "ref.h5"
    summary(source, "-o", reference, *flags, "--batch-size", "1", "--dtype", "float32", *FAST)
    out = tmp_path / "f.h5"
    args = [source, "-o", out, *flags, *FAST, "--batch-size", "1", "--dtype", "float32"]
    args[args.index("--workers") + 1] = "1"
    hold = Hold(10, tmp_path / "held")
    proc = extract_subprocess(*args, stdout=subprocess.DEVNULL, hold=hold)
    hold.wait(proc)
    wait_for_rows(proc, out, 10)  # committed while the run is held
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = committed_rows(out)
    assert 10 <= done < total, "the run was not killed in the middle of the file"
    resumed = summary(*args)
    assert resumed["skipped"] == done and resumed["images"] == total - done
    with open_features(out) as got, open_features(reference) as ref:
        assert sorted(got.paths) == sorted(ref.paths) and len(set(got.paths)) == total
        order = [got.paths.index(p) for p in ref.paths]
        np.testing.assert_array_equal(got.read(order), ref.read(slice(None)))


def test_the_video_reading_example_in_format_docs_runs(inputs, tmp_path, monkeypatch):
    # Catches: docs/format.md's example drifting from the datasets it reads.
    monkeypatch.chdir(tmp_path)
    summary(inputs, "-o", tmp_path / "feats.h5", *FAST)
    (code,) = examples("format.md", "py")
    scope = run_example(code.replace("/data/talk.mp4", str(inputs / "clip.mp4")), "format.md")
    np.testing.assert_array_equal(scope["times"], [0.0, 1.0, 2.0, 3.0])
    assert scope["frames"].shape[0] == 4


@pytest.mark.parametrize("fmt", ["h5", "npy"])
def test_a_photo_named_like_a_frame_is_a_row_of_its_own_and_resumes(tmp_path, fmt):
    # Catches: a photo 'clip.mp4#t=1.000' beside clip.mp4 keyed like the clip's frame at
    # 1 s: two rows with one key in one run, or one of them skipped as done on a resume.
    root = tmp_path / "in"
    root.mkdir()
    clip = make_video(root / "clip.mp4")
    photo = root / "clip.mp4#t=1.000"
    shutil.copy(DATA / "astronaut.png", photo)
    together, resumed = (
        tmp_path / f"{name}.h5" if fmt == "h5" else tmp_path / name for name in "ab"
    )
    assert summary(clip, photo, "-o", together, *FAST)["images"] == 5
    assert summary(clip, photo, "-o", together, *FAST)["skipped"] == 5  # a rerun: all done
    assert summary(photo, "-o", resumed, *FAST)["images"] == 1
    again = summary(photo, clip, "-o", resumed, *FAST)  # the frame at 1 s is not the photo
    assert (again["skipped"], again["images"]) == (1, 4)
    frames = [f"{clip}#t={t}.000" for t in range(4)]
    photo_key = f"{root}/clip.mp4##t=1.000"  # its '#' doubled (docs/format.md)
    keys, columns, failed = rows(together)
    assert keys == [*frames, photo_key] and failed == []
    assert columns["original_size"].tolist() == [[96, 128]] * 4 + [[128, 128]]
    keys, columns, _ = rows(resumed)
    assert keys == [photo_key, *frames]
    assert columns["frame_index"].tolist() == [-1, 0, 10, 20, 30]
