"""Writers under the conditions where nothing may be lost: two runs at once, --overwrite
aimed at someone else's file, non-UTF-8 names, long failure logs, faults between the two
writes of a commit, resumed complete outputs, empty outputs. Each test names the bug it
catches."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest
from paths import DOCS, ROOT, TESTS
from test_writers import ROW, SETTINGS, batch, killed

import sapiens2_cli.output.npy.writer as npy
from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.output import RowBatch, check_output_path, open_features, open_writer
from sapiens2_cli.output.hdf5.writer import H5Writer

#: This module's folder, where a child process imports it from.
HERE = Path(__file__).parent


@pytest.fixture(params=["h5", "npy"])
def out(request, tmp_path):
    return (tmp_path / "feats.h5" if request.param == "h5" else tmp_path / "feats"), request.param


def child(function: str, *args: str, **kw) -> subprocess.Popen:
    """Run `function(*args)` of this module in a new Python process."""
    code = f"import test_writer_safety as t; t.{function}(*{args!r})"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, [ROOT, TESTS, HERE]))}
    return subprocess.Popen([sys.executable, "-c", code], env=env, text=True, **kw)


# --- per-row columns ---------------------------------------------------------------------


def test_columns_appear_when_first_carried_and_are_filled_elsewhere(out):
    """Columns are generic: one first carried by the second batch reads as NaN / -1 on the
    rows before it and on batches without it, the same in both formats and after resume."""
    path, fmt = out
    writer, _ = open_writer(path, fmt, SETTINGS, ROW, np.float16, shard_rows=3)
    writer.write(batch(0, 2))
    second = batch(2, 2)
    second.columns["timestamp"] = np.array([0.5, 1.5])
    second.columns["box_ids"] = np.array([[7], [8]], np.int64)
    writer.write(second)
    writer.close(complete=False)
    writer, _ = open_writer(path, fmt, SETTINGS, ROW, np.float16, shard_rows=3)
    writer.write(RowBatch(["x.jpg"], batch(4, 1).features, {"timestamp": np.array([9.0])}))
    writer.close(complete=True)
    with open_features(path) as f:
        assert set(f.columns) == {"original_size", "content_box", "timestamp", "box_ids"}
        np.testing.assert_array_equal(f.column("timestamp"), [np.nan, np.nan, 0.5, 1.5, 9.0])
        assert f.column("box_ids").tolist() == [[-1], [-1], [7], [8], [-1]]
        assert f.column("box_ids").dtype == np.int64
        assert f.original_size[:, 0].tolist() == [0, 0, 2, 2, -1]
        with pytest.raises(KeyError, match="no column"):
            f.column("nothing")


def test_an_output_without_rows_reads_with_the_shapes_of_one_with_rows(out):
    """Zero rows: features (0, *row shape) in both formats (npy gave (0,)), no columns."""
    path, fmt = out
    writer, _ = open_writer(path, fmt, SETTINGS, ROW, np.float16)
    writer.write(RowBatch([], None, failures=[("a.jpg", "truncated")]))
    writer.close(complete=True)
    with open_features(path) as f:
        assert len(f) == 0 and not f.columns and f.failed == [("a.jpg", "truncated")]
        assert f.read(slice(None)).shape == (0, *ROW) == f.read([]).shape
        assert f.original_size.shape == (0, 2) and f.content_box is None


def test_the_format_docs_reading_examples_run_on_an_output_without_rows(tmp_path, monkeypatch):
    """docs/format.md's examples indexed row 0 and read original_size unconditionally."""
    for name, fmt in (("features.h5", "h5"), ("features", "npy")):
        writer, _ = open_writer(tmp_path / name, fmt, SETTINGS, ROW, np.float16)
        writer.write(RowBatch([], None, failures=[("a.jpg", "truncated")]))
        writer.close(complete=True)
    text = (DOCS / "format.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 2
    monkeypatch.chdir(tmp_path)
    for code in blocks:
        exec(compile(code, "docs/format.md", "exec"), {})


# --- one writer at a time ----------------------------------------------------------------


def hold(path: str, fmt: str) -> None:
    """Child: a writer that writes a batch and reads its own output, then waits for stdin."""
    writer, _ = open_writer(Path(path), fmt, SETTINGS, ROW, np.float16, shard_rows=1)
    writer.write(batch(0, 2))  # HDF5: h5py opens and closes OUT
    with open_features(path) as f:  # and so does reading it
        assert len(f) == 2
    print("ready", flush=True)
    sys.stdin.read()
    writer.write(batch(2, 1))
    writer.close(complete=True)


def try_open(path: str, fmt: str) -> None:
    """Child: open a writer on OUT, then with --overwrite; one line for each refusal."""
    for overwrite in (False, True):
        try:
            open_writer(Path(path), fmt, SETTINGS, ROW, np.float16, overwrite=overwrite)
        except Sapiens2Error as e:
            print(e)


@contextlib.contextmanager
def held(path: Path, fmt: str) -> Iterator[None]:
    """While another process holds OUT (its lock taken, rows written); afterwards it has
    ended cleanly and OUT holds its 3 rows, complete."""
    first = child("hold", str(path), fmt, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert first.stdout.readline() == "ready\n"
        yield
        first.stdin.close()
        assert first.wait(timeout=60) == 0
    finally:
        first.kill()
        first.wait()
    with open_features(path) as f:
        assert len(f) == 3 and f.settings["complete"] is True


def test_a_second_writer_stops_while_the_first_runs(out):
    """Two extract runs on one OUT both finished, rows lost: the POSIX lock was on OUT
    itself and went when h5py (or a reader) closed a descriptor of OUT; and --overwrite
    deleted a folder's lock file and files while their writer ran."""
    path, fmt = out
    with held(path, fmt):
        second = child("try_open", str(path), fmt, stdout=subprocess.PIPE)
        lines = second.communicate(timeout=60)[0].splitlines()
        assert len(lines) == 2 and all("being written by another run" in m for m in lines)
    assert not Path(f"{path}.lock").exists()  # the holder removes it
    writer, done = open_writer(path, fmt, SETTINGS, ROW, np.float16)  # free again
    assert len(done) == 3
    writer.close(complete=True)


def test_a_second_writer_in_the_same_process_stops(out):
    """POSIX locks never conflict within one process: a second writer opened in the same
    process (a notebook, a library caller) got the lock too, and closing it dropped the
    first one's."""
    path, fmt = out
    writer, _ = open_writer(path, fmt, SETTINGS, ROW, np.float16)
    with pytest.raises(Sapiens2Error, match="being written by another run"):
        open_writer(path, fmt, SETTINGS, ROW, np.float16)
    probe = (
        "import fcntl, os, sys\n"
        "fcntl.lockf(os.open(sys.argv[1], os.O_RDWR), fcntl.LOCK_EX | fcntl.LOCK_NB)"
    )
    other = subprocess.run([sys.executable, "-c", probe, f"{path}.lock"], capture_output=True)
    assert other.returncode != 0  # the refused one did not drop the holder's lock
    writer.write(batch(0, 1))
    writer.close(complete=True)
    open_writer(path, fmt, SETTINGS, ROW, np.float16)[0].close(complete=True)


# --- --overwrite replaces only our outputs -----------------------------------------------


def test_overwrite_refuses_what_this_tool_did_not_write(tmp_path):
    """--overwrite deleted whatever sat at OUT: a photo, someone's HDF5 file."""
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"\xff\xd8\xff\xe0 a JPEG")
    foreign = tmp_path / "other.h5"
    with h5py.File(foreign, "w") as f:
        f["data"] = np.arange(3)
    before = foreign.read_bytes()
    for target, fmt in ((photo, "h5"), (photo, "npy"), (foreign, "h5")):
        with pytest.raises(Sapiens2Error, match="not a sapiens2 extract output"):
            check_output_path(target, fmt, overwrite=True)
        with pytest.raises(Sapiens2Error, match="not a sapiens2 extract output"):
            open_writer(target, fmt, SETTINGS, ROW, np.float16, overwrite=True)
    assert photo.read_bytes() == b"\xff\xd8\xff\xe0 a JPEG" and foreign.read_bytes() == before
    ours = tmp_path / "ours.h5"
    open_writer(ours, "h5", SETTINGS, ROW, np.float16)[0].close(complete=True)
    open_writer(ours, "h5", SETTINGS, ROW, np.float16, overwrite=True)[0].close(complete=True)


# --- non-UTF-8 names ---------------------------------------------------------------------


def test_non_utf8_names_round_trip(out):
    """HDF5 could not encode a key holding surrogate escapes (a non-UTF-8 file name),
    failed the run with advice about a full disk and lost the batch."""
    path, fmt = out
    name = os.fsdecode(b"caf\xe9.jpg")
    broken = os.fsdecode(b"d\xfcrer.jpg")
    writer, _ = open_writer(path, fmt, SETTINGS, ROW, np.float16)
    one = batch(0, 1, [(broken, "truncated")])
    one.keys = [name]
    writer.write(one)
    writer.close(complete=True)
    with open_features(path) as f:
        assert f.paths == [name] and f.failed == [(broken, "truncated")]
    assert os.fsencode(name) == b"caf\xe9.jpg"
    if fmt == "h5":  # plain h5py, as docs/format.md says
        with h5py.File(path, "r") as f:
            assert f["paths"].asstr(errors="surrogateescape")[0] == name
            assert os.fsdecode(f["paths"][0]) == name
    writer, done = open_writer(path, fmt, SETTINGS, ROW, np.float16)
    assert done == {name} and writer.failed == {broken: "truncated"}
    writer.close(complete=True)


# --- faults between the two writes of a commit -------------------------------------------


def crash_after_data_flush(path: str) -> None:
    """Child: HDF5 dies right after a batch's data is flushed, before `rows` is raised."""
    writer, _ = open_writer(Path(path), "h5", SETTINGS, ROW, np.float16)
    writer.write(batch(0, 2))
    real = H5Writer._sync

    def sync_then_die(self):
        real(self)
        os._exit(7)

    H5Writer._sync = sync_then_die
    writer.write(batch(2, 2, [("bad.jpg", "truncated")]))


def crash_before_manifest(path: str) -> None:
    """Child: npy dies after a shard's files are in place, before the manifest lists them."""
    writer, _ = open_writer(Path(path), "npy", SETTINGS, ROW, np.float16, shard_rows=2)
    writer.write(batch(0, 2))
    npy.write_manifest = lambda folder, manifest: os._exit(7)
    writer.write(batch(2, 2, [("bad.jpg", "truncated")]))


def test_hdf5_fault_between_data_and_row_count(tmp_path):
    """Rows count only once `rows` is raised, after their data is on disk: a fault between
    the two leaves the old row count, and a resume trims and redoes the batch."""
    path = tmp_path / "f.h5"
    assert child("crash_after_data_flush", str(path)).wait(timeout=60) == 7
    with h5py.File(path, "r") as f:
        assert f["features"].shape[0] == 4  # the fault came after the data reached the file
    with open_features(path) as f:
        assert len(f) == 2 and f.failed == [] and f.settings["complete"] is False
    writer, done = open_writer(path, "h5", SETTINGS, ROW, np.float16)
    assert len(done) == 2
    writer.write(batch(2, 2, [("bad.jpg", "truncated")]))
    writer.close(complete=True)
    with open_features(path) as f:
        assert f.read(slice(None))[:, 0, 0, 0].tolist() == [0, 1, 2, 3]
        assert len(f) == 4 and f.failed == [("bad.jpg", "truncated")]


def test_npy_fault_between_shard_files_and_manifest(tmp_path):
    """A shard counts only once the manifest lists it, after its files are whole: a fault
    between the two leaves the old rows, and a resume removes the unlisted files."""
    path = tmp_path / "feats"
    assert child("crash_before_manifest", str(path)).wait(timeout=60) == 7
    leftovers = sorted(p.name for p in path.glob("shard-00001.*"))
    assert len(leftovers) == 4  # features, paths, two columns: written before the fault
    with open_features(path) as f:
        assert len(f) == 2 and f.failed == []
    writer, done = open_writer(path, "npy", SETTINGS, ROW, np.float16, shard_rows=2)
    assert len(done) == 2 and not list(path.glob("shard-00001.*"))
    assert not list(path.glob("failed-*"))
    writer.write(batch(2, 2, [("bad.jpg", "truncated")]))
    writer.close(complete=True)
    with open_features(path) as f:
        assert f.read(slice(None))[:, 0, 0, 0].tolist() == [0, 1, 2, 3]
        assert f.failed == [("bad.jpg", "truncated")]


# --- complete ----------------------------------------------------------------------------


def test_resuming_clears_complete_before_any_new_row(out):
    """A complete output resumed and then stopped (killed, or closed as interrupted) kept
    complete = true in HDF5: it was cleared only at the first write."""
    path, fmt = out
    writer, _ = open_writer(path, fmt, SETTINGS, ROW, np.float16)
    writer.write(batch(0, 1))
    writer.close(complete=True)
    writer, _ = open_writer(path, fmt, SETTINGS, ROW, np.float16)
    with open_features(path) as f:
        assert f.settings["complete"] is False  # on disk, before any row
    killed(writer)
    with open_features(path) as f:
        assert f.settings["complete"] is False
    writer, _ = open_writer(path, fmt, SETTINGS, ROW, np.float16)
    writer.write(batch(1, 1))
    writer.close(complete=False)
    with open_features(path) as f:
        assert len(f) == 2 and f.settings["complete"] is False
    writer, _ = open_writer(path, fmt, SETTINGS, ROW, np.float16)
    writer.close(complete=True)
    with open_features(path) as f:
        assert f.settings["complete"] is True


# --- links, overwrite of a folder, early lock checks ---------------------------------------


def test_a_link_to_out_shares_its_lock(out, tmp_path):
    """`ln -s a.h5 alias.h5`: runs on a.h5 and on alias.h5 at once both finished and the
    second one's rows were lost, since the lock was `OUT.lock` by the name given. A link
    to OUT, or to a folder above it, is refused as OUT itself is, with the same message."""
    path, fmt = out
    (tmp_path / "linked").symlink_to(tmp_path)
    aliases = [tmp_path / f"alias-{path.name}", tmp_path / "linked" / path.name]
    aliases[0].symlink_to(path.name)
    with held(path, fmt):
        for name in (path, *aliases):
            second = child("try_open", str(name), fmt, stdout=subprocess.PIPE)
            lines = second.communicate(timeout=60)[0].splitlines()
            assert [line.replace(str(name), str(path)) for line in lines] == 2 * [
                f"{path} is being written by another run: wait for it to end or choose another -o"
            ]
    assert not list(tmp_path.glob("*.lock"))


def test_overwrite_of_an_npy_folder_keeps_the_users_files_in_it(tmp_path):
    """--overwrite removes only the files this tool wrote in OUT, named exactly as it names
    them: a user's notes, even one named like a shard, survive."""
    path = tmp_path / "feats"
    writer, _ = open_writer(path, "npy", SETTINGS, ROW, np.float16, shard_rows=1)
    writer.write(batch(0, 2, [("a.jpg", "truncated")]))
    writer.close(complete=True)
    ours = sorted(p.name for p in path.iterdir())
    assert "shard-00001.features.npy" in ours and "failed-00000.json" in ours
    users = {"notes.txt": b"mine", "shard-notes.txt": b"mine too", "failed-runs.json": b"[]"}
    for name, data in users.items():
        (path / name).write_bytes(data)
    check_output_path(path, "npy", overwrite=True)
    writer, done = open_writer(path, "npy", SETTINGS, ROW, np.float16, overwrite=True)
    assert done == set() and writer.failed == {}
    assert sorted(p.name for p in path.iterdir()) == sorted(["manifest.json", *users])
    assert all((path / name).read_bytes() == data for name, data in users.items())
    writer.close(complete=True)
    with open_features(path) as f:
        assert len(f) == 0 and f.failed == []
