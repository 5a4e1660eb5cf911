"""npy output to an object store (`-o s3://bucket/feats/`), against a real S3 protocol
server (moto, the `s3` fixture): read back through the same URL, kill -9 and resume,
--overwrite, and what a URL OUT refuses, each one line before any work."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess

import numpy as np
import pytest
from events import Hold, committed_rows, wait_for_rows
from extract_helpers import FAST, FP32, extract, extract_subprocess, sapiens2
from paths import PHOTOS, TINY, copy_photos

from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.output import open_features
from sapiens2_cli.output.dataset import FeatureDataset

BUCKET = "out"
ARGS = [*FAST, *FP32, "--rows-per-shard", "2"]


@pytest.fixture(scope="module")
def bucket(s3):
    """The bucket the outputs go to, made by whichever test runs first (each test asks for
    it, so any one runs alone)."""
    if not s3.exists(BUCKET):
        s3.mkdir(BUCKET)
    return s3


@pytest.fixture(scope="module")
def photos(bucket, tmp_path_factory):
    """The test photos and a broken one, in a local folder."""
    folder = copy_photos(tmp_path_factory.mktemp("photos"))
    (folder / "broken.jpg").write_bytes(b"not an image")
    return folder


def url(prefix: str) -> str:
    return f"s3://{BUCKET}/{prefix}/"


def objects(s3, prefix: str) -> set[str]:
    return {name.rsplit(f"{prefix}/", 1)[1] for name in s3.find(f"{BUCKET}/{prefix}")}


def as_dict(out) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    with open_features(out) as f:
        assert len(set(f.paths)) == len(f.paths), "a key appears twice"
        return dict(zip(f.paths, f.read(slice(None)), strict=True)), dict(f.failed)


def test_an_npy_output_at_a_url_reads_back_through_it_as_a_local_run(s3, photos, tmp_path):
    # Catches: shards or records not uploaded, staging files left in the prefix, rows
    # read from the wrong byte ranges (two shards, rows picked across them).
    remote = extract(photos, *ARGS, "-o", url("same"), "--json")
    assert remote.exit_code == 0, remote.output
    assert json.loads(remote.stdout.splitlines()[-1])["output"] == url("same")
    assert extract(photos, *ARGS, "-o", tmp_path / "local").exit_code == 0
    assert objects(s3, "same") == {p.name for p in (tmp_path / "local").iterdir()}
    with open_features(url("same")) as got, open_features(tmp_path / "local") as want:
        assert got.paths == want.paths and len(got) == len(PHOTOS)
        assert got.failed == want.failed == [(str(photos / "broken.jpg"), got.failed[0][1])]
        assert got.settings == want.settings
        for rows in ([0, 2, 3], [1, 2], slice(None)):
            np.testing.assert_array_equal(got.read(rows), want.read(rows))
        for name in want.columns:
            np.testing.assert_array_equal(got.column(name), want.column(name))
        every = [np.load(f) for f in sorted((tmp_path / "local").glob("*.features.npy"))]
        np.testing.assert_array_equal(got.read([3]), np.concatenate(every)[[3]])
        # Catches: FeatureDataset taking the URL for a local path (Path('s3:/...'))
        item = FeatureDataset(url("same"))[3]
        assert item["key"] == want.paths[3]
        np.testing.assert_array_equal(item["features"].numpy(), want.read([3])[0])
    # Catches: `sapiens2 info` taking the URL for a local path, or not knowing its format
    shown = sapiens2("info", url("same"), "--json")
    assert shown.exit_code == 0, shown.output
    fields = json.loads(shown.stdout)
    assert (fields["rows"], fields["format"]) == (len(PHOTOS), "npy")


def test_a_rerun_at_the_url_resumes_it(s3, photos):
    assert extract(photos / PHOTOS[0], *ARGS, "-o", url("resume")).exit_code == 0
    result = extract(photos, *ARGS, "-o", url("resume"), "--json")
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["images"] == len(PHOTOS) - 1 and summary["rows"] == len(PHOTOS)
    assert sorted(as_dict(url("resume"))[0]) == sorted(str(photos / p) for p in PHOTOS)


@pytest.mark.slow
def test_kill_9_then_resume_at_the_url(bucket, tmp_path):
    s3 = bucket
    photos = [PHOTOS[i % len(PHOTOS)] for i in range(40)]
    images = copy_photos(tmp_path / "many", {f"{i:03d}.{p[-3:]}": p for i, p in enumerate(photos)})
    args = [images, "--checkpoint", TINY, "--size", "64x48", "--batch-size", "1"]
    args += ["--workers", "1", "-q", *FP32, "--rows-per-shard", "3"]
    assert extract(*args, "-o", tmp_path / "ref").exit_code == 0
    hold = Hold(6, tmp_path / "held")
    proc = extract_subprocess(*args, "-o", url("kill"), stdout=subprocess.DEVNULL, hold=hold)
    hold.wait(proc)
    wait_for_rows(proc, url("kill"), 6)  # the manifest object lists two shards: uploaded
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 6 <= committed_rows(url("kill")) < 40
    assert extract(*args, "-o", url("kill")).exit_code == 0
    (got, _), (want, _) = as_dict(url("kill")), as_dict(tmp_path / "ref")
    assert got.keys() == want.keys() and len(got) == 40
    for key, features in want.items():
        np.testing.assert_array_equal(got[key], features, err_msg=key)
    assert objects(s3, "kill") == {p.name for p in (tmp_path / "ref").iterdir()}


def test_overwrite_at_the_url_keeps_a_users_objects(s3, photos, tmp_path):
    assert extract(photos, *ARGS, "-o", url("over")).exit_code == 0
    s3.pipe({f"{BUCKET}/over/notes.txt": b"mine", f"{BUCKET}/over/sub/shard-00001.paths.npy": b"x"})
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(photos / PHOTOS[0], one / PHOTOS[0])
    assert extract(one, *ARGS, "-o", url("over"), "--overwrite").exit_code == 0
    assert as_dict(url("over"))[0].keys() == {str(one / PHOTOS[0])}
    assert objects(s3, "over") == {
        "notes.txt",
        "sub/shard-00001.paths.npy",
        "manifest.json",
        "shard-00000.features.npy",
        "shard-00000.paths.npy",
        "shard-00000.original_size.npy",
    }
    assert s3.cat(f"{BUCKET}/over/notes.txt") == b"mine"


def test_hdf5_at_a_url_is_one_line_before_any_work(s3, photos):
    for out, extra in ((f"s3://{BUCKET}/f.h5", []), (url("x"), ["--format", "h5"])):
        result = extract(photos, *ARGS[:-2], *extra, "-o", out)
        assert result.exit_code == 1 and isinstance(result.exception, Sapiens2Error)
        assert str(result.exception).startswith("HDF5 output must be local: write it locally")
    assert not s3.find(BUCKET) or not any(n.endswith(".h5") for n in s3.find(BUCKET))


def test_a_prefix_of_other_objects_is_refused(s3, photos):
    s3.pipe(f"{BUCKET}/theirs/data.csv", b"a,b")
    result = extract(photos, *ARGS, "-o", url("theirs"))
    assert isinstance(result.exception, Sapiens2Error), result.output
    assert "holds other objects, not a sapiens2 extract output" in str(result.exception)
    assert objects(s3, "theirs") == {"data.csv"}


def test_there_is_no_lock_object_and_no_warning_since_commits_are_conditional(s3, photos, caplog):
    result = extract(photos, *ARGS, "-o", url("lock"))
    assert result.exit_code == 0
    assert not [line for line in caplog.messages if "lock" in line]
    assert not any(name.endswith(".lock") for name in s3.find(BUCKET))


def test_merge_into_a_url_is_one_line(s3):
    result = sapiens2("merge", "-o", url("merged"))
    assert isinstance(result.exception, Sapiens2Error), result.output
    assert str(result.exception).startswith("merge writes a local output: merge into a local")


def test_a_file_url_output_is_the_local_folder_it_names(photos, tmp_path):
    assert extract(photos, *ARGS, "-o", f"file://{tmp_path}/f").exit_code == 0
    assert as_dict(tmp_path / "f")[0].keys() == as_dict(f"file://{tmp_path}/f")[0].keys()
    assert len(as_dict(tmp_path / "f")[0]) == len(PHOTOS)
