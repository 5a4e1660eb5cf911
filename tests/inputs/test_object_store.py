"""Inputs in an object store, against a real S3 protocol server (moto in server mode, started
here on 127.0.0.1): prefixes, list files, tar shards, Parquet, videos, box files; kill -9 and
resume; each bad URL one line before any work."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from events import Hold, committed_rows, wait_for_rows
from extract_helpers import FAST, FP32, extract, extract_subprocess, summary
from media import make_tar, make_video, webdataset_members
from paths import DATA, PHOTOS, TINY, copy_photos
from s3_server import free_port, http_server, moto_server

from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.output import open_features

s3fs = pytest.importorskip("s3fs")
#: Every in-process run here: float32 features, one image a batch (rows compare exactly).
EXACT = [*FAST, *FP32, "--dtype", "float32", "--batch-size", "1"]
BUCKET = "data"


@pytest.fixture(scope="session")
def bucket(s3, tmp_path_factory):
    """The same files in the bucket and in a local folder: photos under nested prefixes, a
    corrupt one, a hidden one and a text file, a tar shard, a Parquet file and a video."""
    local = tmp_path_factory.mktemp("store").resolve()
    copy_photos(local / "photos", {("sub/" if n % 2 else "") + p: p for n, p in enumerate(PHOTOS)})
    (local / "photos/broken.jpg").write_bytes(b"not an image")
    (local / "photos/.hidden.jpg").write_bytes((DATA / PHOTOS[0]).read_bytes())
    (local / "photos/notes.txt").write_text("not listed")
    (local / "photos/.thumbs").mkdir()
    shutil.copy(DATA / PHOTOS[0], local / "photos/.thumbs/a.png")
    (local / "mixed").mkdir()
    make_tar(local / "mixed/shard.tar", webdataset_members(3))
    cells = [{"bytes": (DATA / p).read_bytes(), "path": p} for p in PHOTOS[:2]]
    kind = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    pq.write_table(pa.table({"image": pa.array(cells, kind)}), local / "mixed/t.parquet")
    make_video(local / "mixed/clip.mp4", frames=6, rate=2)
    s3.mkdir(BUCKET)
    s3.put(str(local) + "/", f"{BUCKET}/", recursive=True)
    return local


def url(relative: str) -> str:
    return f"s3://{BUCKET}/{relative}"


def rows(out) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    with open_features(out) as f:
        return dict(zip(f.paths, f.read(slice(None)), strict=True)), dict(f.failed)


def test_a_prefix_is_listed_and_each_object_equals_its_bytes_as_a_loose_file(bucket, tmp_path):
    # One run (same model, batches of one) over the prefix and the loose copies. Catches:
    # keys that are not the URL, hidden or non-image objects taken, other bytes decoded.
    summary(url("photos"), bucket / "photos", "-o", tmp_path / "f.h5", *EXACT)
    got, failed = rows(tmp_path / "f.h5")
    names = ["astronaut.png", "coffee.jpg", "sub/chelsea.jpg", "sub/hubble_deep_field.jpg"]
    for name in names:
        remote, local = got[url(f"photos/{name}")], got[str(bucket / "photos" / name)]
        np.testing.assert_array_equal(remote, local, err_msg=name)
    remote_keys = sorted(k for k in got if k.startswith("s3://"))
    assert remote_keys == sorted(url(f"photos/{n}") for n in names)
    assert failed[url("photos/broken.jpg")] == failed[str(bucket / "photos/broken.jpg")]


def test_tar_parquet_and_video_objects_read_as_their_local_copies(bucket, tmp_path):
    summary(url("mixed/"), bucket / "mixed", "-o", tmp_path / "f.h5", *EXACT)
    got, failed = rows(tmp_path / "f.h5")
    assert not failed
    local = {k: v for k, v in got.items() if not k.startswith("s3://")}
    kinds = {kind: sum(kind in key for key in local) for kind in ("tar/", "#row=", "mp4#t=")}
    assert kinds["tar/"] == 3 and kinds["#row="] == 2 and kinds["mp4#t="] >= 2, kinds
    for key, features in local.items():
        remote = key.replace(str(bucket), f"s3://{BUCKET}")
        np.testing.assert_array_equal(got[remote], features, err_msg=remote)
    assert len(got) == 2 * len(local)


def test_a_list_file_at_a_url_names_objects_and_prefixes(bucket, s3, tmp_path):
    listed = f"{url('photos/coffee.jpg')}\n{url('mixed/')}\n{url('photos/missing.jpg')}\n"
    s3.pipe(f"{BUCKET}/lists/list.txt", listed.encode())
    summary("--files-from", url("lists/list.txt"), "-o", tmp_path / "f.h5", *EXACT)
    got, failed = rows(tmp_path / "f.h5")
    assert url("photos/coffee.jpg") in got and len(got) == 1 + 8
    assert failed == {url("photos/missing.jpg"): "file not found"}


def test_a_box_file_at_a_url_crops_objects(bucket, s3, tmp_path):
    boxes = [{"path": "coffee.jpg", "bbox": [10, 20, 100, 80], "id": 7}]
    s3.pipe(f"{BUCKET}/lists/boxes.jsonl", "\n".join(map(json.dumps, boxes)).encode())
    local = tmp_path / "boxes.jsonl"
    local.write_text("\n".join(map(json.dumps, boxes)))
    summary(url("photos"), "--boxes", url("lists/boxes.jsonl"), "-o", tmp_path / "r.h5", *EXACT)
    summary(bucket / "photos", "--boxes", local, "-o", tmp_path / "l.h5", *EXACT)
    remote, local_rows = rows(tmp_path / "r.h5")[0], rows(tmp_path / "l.h5")[0]
    assert list(remote) == [url("photos/coffee.jpg#box=7")]
    np.testing.assert_array_equal(remote[url("photos/coffee.jpg#box=7")], *local_rows.values())


def test_objects_over_http_read_as_their_local_copies(bucket, tmp_path):
    # pyarrow reads s3:// itself; over http only fsspec's file does (a Parquet file, an image)
    with http_server(str(bucket)) as base:
        inputs = [f"{base}/mixed/t.parquet", f"{base}/photos/coffee.jpg", bucket]
        summary(*inputs, "-o", tmp_path / "f.h5", *EXACT)
    got = rows(tmp_path / "f.h5")[0]
    for name in ("mixed/t.parquet#row=0", "mixed/t.parquet#row=1", "photos/coffee.jpg"):
        np.testing.assert_array_equal(got[f"{base}/{name}"], got[f"{bucket}/{name}"], err_msg=name)


def test_listing_a_prefix_is_one_paginated_listing(s3, monkeypatch):
    from sapiens2_cli.inputs.sources import list_files

    s3.pipe({f"{BUCKET}/many/{i:04d}.jpg": b"x" for i in range(1001)})
    calls = []
    original = s3fs.S3FileSystem._call_s3

    async def counted(self, method, *args, **kwargs):
        calls.append(method)
        return await original(self, method, *args, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "_call_s3", counted)
    s3fs.S3FileSystem.clear_instance_cache()
    files = list_files([url("many")])
    assert files == [url(f"many/{i:04d}.jpg") for i in range(1001)]
    assert calls == ["list_objects_v2", "list_objects_v2"]  # 1000 a page, no call per object


def test_a_file_url_is_the_local_path_it_names(bucket):
    from sapiens2_cli.inputs.sources import list_files

    folder = bucket / "photos"
    assert list_files([f"file://{folder}"]) == list_files([str(folder)])
    assert list_files([f"file://{folder}/coffee.jpg"]) == [str(folder / "coffee.jpg")]


def test_a_local_run_does_not_import_fsspec(bucket):
    code = (
        "import sys; from sapiens2_cli.inputs.sources import list_files;"
        "from sapiens2_cli.inputs.decode import decode_image;"
        f"[decode_image(p, (8, 8)) for p in list_files([{str(bucket / 'photos')!r}])[:1]];"
        "import sapiens2_cli.cli, sapiens2_cli.scaleout.launch;"
        "assert 'fsspec' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.fixture
def committed(bucket, tmp_path):
    """An OUT with rows committed, which no bad URL may touch."""
    out = tmp_path / "f.h5"
    summary(bucket / "photos", "-o", out, *EXACT)
    with open_features(out) as f:
        return out, len(f)


def refuse(committed, *args) -> str:
    out, before = committed
    result = extract(*args, "-o", out, *EXACT, "--json")
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, Sapiens2Error), result.exception
    message = str(result.exception)
    assert "\n" not in message, message
    assert committed_rows(out) == before
    return message


def test_a_bucket_that_does_not_exist_is_one_line(s3, committed):
    assert "s3://nobucket/x does not exist" in refuse(committed, "s3://nobucket/x")


def test_an_empty_prefix_is_one_line(s3, committed):
    assert "s3://data/nothing does not exist" in refuse(committed, url("nothing"))


def test_a_wrong_endpoint_is_one_line(s3, committed, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nobody there
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # botocore's retries, not ours to test
    s3fs.S3FileSystem.clear_instance_cache()
    assert "cannot reach s3://data/photos" in refuse(committed, url("photos"))
    s3fs.S3FileSystem.clear_instance_cache()


def test_invalid_credentials_are_one_line(committed, monkeypatch):
    # A server that checks keys (moto's IAM), where the testing key does not exist.
    with moto_server({"INITIAL_NO_AUTH_ACTION_COUNT": "0"}) as endpoint:
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        s3fs.S3FileSystem.clear_instance_cache()
        message = refuse(committed, url("photos"))
    s3fs.S3FileSystem.clear_instance_cache()
    assert "access to s3://data/photos denied" in message and "credentials" in message


def test_a_missing_extra_is_named(committed, monkeypatch):
    monkeypatch.setitem(sys.modules, "s3fs", None)
    message = refuse(committed, url("photos"))
    assert "pip install 'sapiens2-cli[s3]'" in message


@pytest.mark.parametrize("why", ["missing extra", "credentials"])
def test_objects_from_a_list_are_checked_before_any_work(committed, monkeypatch, tmp_path, why):
    """Catches URLs taken from a list unlisted reaching the decode workers unchecked, where a
    missing extra or credentials in the URL became one failure record per object."""
    if why == "missing extra":
        monkeypatch.setitem(sys.modules, "s3fs", None)
    objects = [url("photos/a.jpg"), "s3://key:secret@data/photos/b.jpg"]
    listed = tmp_path / "list.txt"
    listed.write_text(objects[why == "credentials"] + "\n")
    message = refuse(committed, "--files-from", listed)
    assert ("sapiens2-cli[s3]" if why == "missing extra" else "carries credentials") in message


def test_credentials_in_a_url_are_refused(committed):
    assert "carries credentials" in refuse(committed, "s3://key:secret@data/photos")


def test_an_object_that_is_not_an_image_is_a_failure_record(s3, tmp_path):
    done = summary(url("photos/broken.jpg"), "-o", tmp_path / "f.h5", *EXACT)
    assert done["failed_total"] == 1
    assert rows(tmp_path / "f.h5")[1][url("photos/broken.jpg")].startswith("not an image")


@pytest.mark.slow
def test_kill_9_then_resume_from_the_bucket(bucket, s3, tmp_path):
    s3.pipe({f"{BUCKET}/kill/{i:03d}.png": (DATA / PHOTOS[0]).read_bytes() for i in range(40)})
    args = [url("kill"), "--checkpoint", TINY, "--size", "64x48", "--batch-size", "1"]
    args += ["--workers", "1", "-q", *FP32]
    reference = tmp_path / "ref.h5"
    assert extract(*args, "-o", reference).exit_code == 0
    out = tmp_path / "f.h5"
    hold = Hold(10, tmp_path / "held")
    proc = extract_subprocess(*args, "-o", out, stdout=subprocess.DEVNULL, hold=hold)
    hold.wait(proc)
    wait_for_rows(proc, out, 10)  # committed while the run is held
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 10 <= committed_rows(out) < 40
    assert extract(*args, "-o", out).exit_code == 0
    with open_features(out) as f:
        assert len(set(f.paths)) == len(f.paths), "a key appears twice"
    (got, _), (want, _) = rows(out), rows(reference)
    assert got.keys() == want.keys() and len(got) == 40
    for key, features in want.items():
        np.testing.assert_array_equal(got[key], features, err_msg=key)
