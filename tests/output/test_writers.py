"""Writers and the reader, on real files: round trips, resume, cut-off batches, refusals."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.output import RowBatch, check_output_path, open_features, open_writer

SETTINGS = {
    "arch": "custom",
    "checkpoint": "w.safetensors",
    "checkpoint_sha256": "ab" * 32,
    "image_size": [64, 48],
    "grid_size": [4, 3],
    "embed_dim": 8,
    "mean": [1.0, 2.0, 3.0],
    "std": [4.0, 5.0, 6.0],
    "resize": "letterbox",
    "layers": [1, 3],
    "tokens": "patch",
    "layout": "tokens",
    "dtype": "float16",
    "precision": "fp32",
    "tool_version": "0",
    "format_version": 1,
    "complete": False,
}
ROW = (2, 12, 8)


def batch(start: int, k: int, failures=()) -> RowBatch:
    rows = np.arange(start, start + k, dtype=np.float16)[:, None, None, None]
    return RowBatch(
        keys=[f"dir/ünï {i}.jpg" for i in range(start, start + k)],
        features=np.broadcast_to(rows, (k, *ROW)).copy(),
        columns={
            "original_size": np.full((k, 2), start, np.int32),
            "content_box": np.full((k, 4), start, np.int32),
        },
        failures=list(failures),
    )


def killed(writer) -> None:
    """As if the process was killed: no close(), nothing after the last commit; the lock
    goes with the process."""
    if getattr(writer, "_handle", None) is not None:
        writer._handle.close()
    writer._lock.release()


@pytest.fixture(params=["h5", "npy"])
def out(request, tmp_path):
    return (tmp_path / "feats.h5" if request.param == "h5" else tmp_path / "feats"), request.param


def test_round_trip_resume_and_failures(out):
    path, fmt = out
    writer, done = open_writer(path, fmt, SETTINGS, ROW, np.float16, shard_rows=3)
    assert done == set()
    writer.write(batch(0, 2, [("bad/a.jpg", "truncated")]))
    writer.write(batch(2, 2))
    writer.write(RowBatch([], None))
    writer.close(complete=False)
    writer, done = open_writer(path, fmt, SETTINGS, ROW, np.float16, shard_rows=3)
    assert done == {f"dir/ünï {i}.jpg" for i in range(4)}
    assert writer.failed == {"bad/a.jpg": "truncated"}
    retried = batch(4, 1)
    retried.keys = ["bad/a.jpg"]  # the failed image works now: its record goes
    writer.write(retried)
    writer.close(complete=True)
    with open_features(path) as f:
        assert len(f) == 5 and f.paths[-1] == "bad/a.jpg" and f.failed == []
        assert f.settings["complete"] is True
        assert f.settings["layers"] == [1, 3] and f.settings["image_size"] == [64, 48]
        assert f.read(slice(None)).shape == (5, *ROW)
        assert f.read([4, 1, 1])[:, 0, 0, 0].tolist() == [4, 1, 1]
        assert f.read(np.array([], int)).shape[0] == 0
        assert f.original_size[:, 0].tolist() == [0, 0, 2, 2, 4]
        assert f.content_box.shape == (5, 4)


def test_overwrite_replaces_our_output_with_other_settings(out):
    """(Whether settings may differ is the pipeline's call: tests/config/test_settings.py.)"""
    path, fmt = out
    open_writer(path, fmt, SETTINGS, ROW, np.float16)[0].close(True)
    writer, done = open_writer(
        path, fmt, {**SETTINGS, "dtype": "float32"}, ROW, np.float32, overwrite=True
    )
    assert done == set()
    writer.close(True)
    with open_features(path) as f:
        assert f.settings["dtype"] == "float32" and len(f) == 0


def test_rows_of_a_cut_off_batch_are_ignored_then_trimmed(tmp_path):
    path = tmp_path / "f.h5"
    writer, _ = open_writer(path, "h5", SETTINGS, ROW, np.float16)
    writer.write(batch(0, 2))
    killed(writer)
    with h5py.File(path, "r+") as f:  # a batch written but never committed
        for name in ("features", "paths", "original_size", "content_box"):
            f[name].resize(3, axis=0)
        f["paths"][2] = "uncommitted.jpg"
    with open_features(path) as f:
        assert len(f) == 2 and "uncommitted.jpg" not in f.paths
    writer, done = open_writer(path, "h5", SETTINGS, ROW, np.float16)
    assert len(done) == 2
    writer.write(batch(2, 1))
    writer.close(True)
    with h5py.File(path, "r") as f:
        assert f["features"].shape[0] == f["paths"].shape[0] == f.attrs["rows"] == 3


def test_npy_files_are_plain_and_leftovers_are_removed(tmp_path):
    path = tmp_path / "feats"
    writer, _ = open_writer(path, "npy", SETTINGS, ROW, np.float16, shard_rows=2)
    writer.write(batch(0, 3))  # one shard of 2 rows; 1 row in the next one's .tmp
    manifest = json.loads((path / "manifest.json").read_text())
    assert [s["rows"] for s in manifest["shards"]] == [2]
    paths = np.load(path / "shard-00000.paths.npy")  # no allow_pickle needed
    assert paths.dtype.kind == "U" and paths[1] == "dir/ünï 1.jpg"
    assert np.load(path / "shard-00000.features.npy", mmap_mode="r").shape == (2, *ROW)
    killed(writer)
    (path / "shard-00001.features.npy.tmp").write_bytes(b"half a shard")  # a kill's leftover
    (path / "shard-00001.paths.npy").write_bytes(b"renamed, never listed")
    writer, done = open_writer(path, "npy", SETTINGS, ROW, np.float16, shard_rows=2)
    assert len(done) == 2
    assert sorted(p.name for p in path.glob("shard-00001*")) == []
    writer.close(True)


def test_anything_else_is_not_an_output(tmp_path):
    (tmp_path / "x.h5").write_text("hello")
    with pytest.raises(Sapiens2Error, match="not a sapiens2 extract output"):
        open_features(tmp_path / "x.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["data"] = 1
    with pytest.raises(Sapiens2Error, match="not a sapiens2 extract output"):
        open_features(tmp_path / "other.h5")
    with pytest.raises(Sapiens2Error, match="not a sapiens2 extract output"):
        open_features(tmp_path)
    with pytest.raises(Sapiens2Error, match="--overwrite"):
        check_output_path(tmp_path / "x.h5", "h5", overwrite=False)
    with pytest.raises(Sapiens2Error, match="folder of other files"):
        check_output_path(tmp_path, "npy", overwrite=True)
