"""The failure log: appended not rewritten, superseded records, reruns that add nothing."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from test_writers import ROW, SETTINGS, batch, killed

from sapiens2_cli.output import RowBatch, open_features, open_writer
from sapiens2_cli.output.hdf5.writer import H5Writer


@pytest.fixture(params=["h5", "npy"])
def out(request, tmp_path):
    return (tmp_path / "feats.h5" if request.param == "h5" else tmp_path / "feats"), request.param


def test_a_failure_record_is_appended_not_the_whole_list_rewritten(tmp_path, monkeypatch):
    """HDF5 rewrote every failure record on every batch (20,000 failures: 38 s, 40,000:
    124 s): each batch must write only its new records."""
    written = []
    put = H5Writer._put_strings

    def spy(self, name, start, values):
        written.append((name, start, len(values)))
        put(self, name, start, values)

    monkeypatch.setattr(H5Writer, "_put_strings", spy)
    writer, _ = open_writer(tmp_path / "f.h5", "h5", SETTINGS, ROW, np.float16)
    for i in range(50):
        writer.write(RowBatch([], None, failures=[(f"{i}.jpg", "truncated")]))
    assert written == [(n, i, 1) for i in range(50) for n in ("failed_paths", "failed_errors")]
    writer.close(complete=True)
    with open_features(tmp_path / "f.h5") as f:
        assert len(f.failed) == 50


def test_npy_failure_records_stay_out_of_the_manifest(tmp_path):
    """The npy manifest, rewritten with every shard, held every failure record: its size
    (and each rewrite) grew with the failures."""
    path = tmp_path / "feats"
    writer, _ = open_writer(path, "npy", SETTINGS, ROW, np.float16, shard_rows=1)
    for i in range(20):
        writer.write(batch(i, 1, [(f"bad {i}-{j}.jpg", "truncated " * 5) for j in range(50)]))
    manifest = (path / "manifest.json").read_bytes()
    assert len(manifest) < 20 * 400  # about 300 bytes per shard, no records
    writer.close(complete=True)
    with open_features(path) as f:
        assert len(f) == 20 and len(f.failed) == 1000
    assert [p.name for p in path.glob("failed-*")] == ["failed-00020.json"]  # compacted


def test_superseded_failures_read_right_before_and_after_compaction(out):
    """With an append-only log a key can have several records: the last one counts and a
    tombstone (a later row) clears it, whether or not the run closed (compaction)."""
    path, fmt = out
    writer, _ = open_writer(path, fmt, SETTINGS, ROW, np.float16, shard_rows=1)
    writer.write(batch(0, 1, [("a.jpg", "truncated"), ("b.jpg", "truncated")]))
    retried = batch(1, 1, [("b.jpg", "unsupported format")])
    retried.keys = ["a.jpg"]  # a works now, b fails differently
    writer.write(retried)
    writer.write(batch(2, 1))  # npy: the records above are in shard files' wake now
    killed(writer)
    with open_features(path) as f:
        assert f.failed == [("b.jpg", "unsupported format")] and f.failed_records == 4
    writer, _ = open_writer(path, fmt, SETTINGS, ROW, np.float16, shard_rows=1)
    assert writer.failed == {"b.jpg": "unsupported format"}
    writer.close(complete=True)
    with open_features(path) as f:
        assert f.failed == [("b.jpg", "unsupported format")] and f.failed_records == 1
    if fmt == "h5":
        with h5py.File(path, "r") as f:
            assert f["failed_paths"].asstr()[:].tolist() == ["b.jpg"]


def folder_bytes(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.iterdir())


def test_reruns_that_fail_the_same_inputs_again_do_not_grow_the_output(out):
    """HDF5 grew by a copy of the failure log on every resume that retried permanently
    missing inputs (20,000: 11.7 -> 32 -> 42 -> 52 -> 63 -> 73 MB), npy stayed the same."""
    path, fmt = out
    missing = [(f"/data/missing/{i:05d}.jpg", "file not found") for i in range(3000)]
    sizes = []
    for _ in range(5):
        writer, done = open_writer(path, fmt, SETTINGS, ROW, np.float16)
        if not done:
            writer.write(batch(0, 2))
        for start in range(0, len(missing), 64):  # failures come batch by batch
            writer.write(RowBatch([], None, failures=missing[start : start + 64]))
        writer.close(complete=True)
        sizes.append(folder_bytes(path))
    assert max(sizes[1:]) <= sizes[1] + 4096, sizes
    with open_features(path) as f:
        assert f.failed == missing and f.failed_records == len(missing) and len(f) == 2


def test_a_failure_with_an_empty_reason_is_still_a_failure(out):
    """An empty reason is a tombstone in the log: written as given it read back as "no
    failure", and the item was lost from both the rows and the failures."""
    path, fmt = out
    writer, _ = open_writer(path, fmt, SETTINGS, ROW, np.float16, shard_rows=1)
    writer.write(batch(0, 1, [("a.jpg", ""), ("b.jpg", "truncated")]))
    killed(writer)  # the log as written, before any compaction
    with open_features(path) as f:
        assert [key for key, _ in f.failed] == ["a.jpg", "b.jpg"]
        assert all(reason for _, reason in f.failed)
    writer, _ = open_writer(path, fmt, SETTINGS, ROW, np.float16, shard_rows=1)
    assert set(writer.failed) == {"a.jpg", "b.jpg"}
    writer.write(RowBatch([], None, failures=[("c.jpg", "")]))
    writer.close(complete=True)
    with open_features(path) as f:
        assert [key for key, _ in f.failed] == ["a.jpg", "b.jpg", "c.jpg"]
        assert all(reason for _, reason in f.failed)
