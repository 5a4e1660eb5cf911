"""HDF5 output: one file, rows appended batch by batch, each batch committed before it counts.

Crash safety (kill -9, power loss) rests on three things:

* metadata-cache evictions are off, so HDF5 changes its on-disk structure only inside
  `flush()`, never half-way through a batch;
* each batch is written, flushed and fsynced, and only then is the root attribute `rows`
  (the number of committed rows) raised and flushed again;
* readers and resumes trust `rows`, not the dataset lengths: rows past it belong to a
  batch that was cut off, and a resume trims them before appending;
* strings are fixed-width UTF-8, widened when a longer one comes: variable-length strings
  live in HDF5's global heap, and a kill can leave a chunk pointing at heap objects that
  never reached the disk (the next write to that chunk then fails). Whatever frees file
  space (a widening, trimming, a shorter failure list) is flushed before the next batch
  allocates any, so new data never lands where the last commit's structure points.

The file is created under a temporary name and renamed into place, so OUT is never a
half-made file. One writer at a time holds a POSIX lock on it (not HDF5's own flock, which
decode workers forked after the file was opened would inherit, keeping OUT locked for a
while after a kill -9).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import h5py
import numpy as np

from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.writers.base import (
    FeatureWriter,
    OutputFull,
    RowBatch,
    fill_value,
    fsync_dir,
    lock_file,
)

FAILURE_DATASETS = ("failed_paths", "failed_errors")  # every other dataset is one per row
META_CHUNK = 1024  # rows per chunk of the small per-row datasets
STRING_WIDTH = 256  # initial bytes per string; widened as needed
RESERVE_MARGIN = 2**20  # bytes reserved beyond a batch's data, for HDF5's metadata
#: Superblock version -> byte offsets of its "size of offsets" and "end of file address"
#: fields (HDF5 file format specification, section II.A).
_SUPERBLOCK_EOA = {0: (13, 40), 1: (13, 44), 2: (9, 28), 3: (9, 28)}


def string_dtype(width: int) -> np.dtype:
    return h5py.string_dtype("utf-8", length=width)


def _strings(f: h5py.File, name: str, chunk: int) -> None:
    f.create_dataset(name, (0,), string_dtype(STRING_WIDTH), maxshape=(None,), chunks=(chunk,))


def to_attr(value: object) -> object:
    """A settings value as an HDF5 attribute (lists become arrays, None an empty string)."""
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return np.asarray(value)
    return value


def from_attr(value: object) -> object:
    """An HDF5 attribute back as plain Python (arrays -> lists, numpy scalars -> Python)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return value


def _no_evictions(f: h5py.File) -> None:
    """Keep dirty metadata in memory until flush(), so a kill between flushes changes nothing
    the last commit relies on."""
    config = f.id.get_mdc_config()
    config.evictions_enabled = False
    config.incr_mode = 0  # H5C_incr__off: required with evictions off
    config.flash_incr_mode = 0
    config.decr_mode = 0
    f.id.set_mdc_config(config)


class H5Writer(FeatureWriter):
    """Appends rows to an HDF5 file; see the module docstring for the commit protocol."""

    def __init__(self, path: Path, failed: dict[str, str]) -> None:
        super().__init__(path, failed)
        self._lock = lock_file(path)
        try:
            with h5py.File(path, "r", locking=False) as f:
                self._rows = int(f.attrs["rows"])
        except OSError as e:
            os.close(self._lock)
            raise Sapiens2Error(f"cannot open {path} ({e}): check it and its permissions") from None
        self._handle: h5py.File | None = None
        # Held for the writer's life: a dataset object freed after a failed write makes HDF5
        # try (and fail) to write again, with tracebacks, from the garbage collector.
        self._ds: dict[str, h5py.Dataset] = {}
        self._failed_written = dict(failed)

    @property
    def _file(self) -> h5py.File:
        """The file, opened at the first write rather than at construction: by then the decode
        workers have been forked, and a fork must not inherit an open HDF5 file (its copy of
        the library's state could write to it). Opening trims rows of a cut-off batch."""
        if self._handle is None:
            f = self._handle = h5py.File(self.path, "r+", locking=False)
            _no_evictions(f)
            self._ds = {name: f[name] for name in f}
            for name in self._ds:
                if name not in FAILURE_DATASETS and self._ds[name].shape[0] != self._rows:
                    self._ds[name].resize(self._rows, axis=0)
            f.attrs["complete"] = False
            self._commit()
        return self._handle

    @classmethod
    def create(
        cls,
        path: Path,
        settings: dict,
        row_shape: tuple[int, ...],
        dtype: np.dtype,
        compression: str | None = None,
    ) -> H5Writer:
        """A new, empty output at `path` (made under a temporary name, then renamed)."""
        tmp = path.with_name(path.name + ".creating")
        with h5py.File(tmp, "w") as f:
            f.create_dataset(
                "features",
                shape=(0, *row_shape),
                maxshape=(None, *row_shape),
                chunks=(1, *row_shape),  # one image per chunk
                dtype=dtype,
                compression=compression,
            )
            _strings(f, "paths", META_CHUNK)
            for name in FAILURE_DATASETS:
                _strings(f, name, 256)
            for key, value in settings.items():
                f.attrs[key] = to_attr(value)
            f.attrs["rows"] = 0
        with open(tmp, "rb+") as raw:
            os.fsync(raw.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
        return cls(path, {})

    @classmethod
    def resume(cls, path: Path, failed: dict[str, str]) -> H5Writer:
        """An existing output to append to (rows of a batch that was cut off are dropped)."""
        return cls(path, failed)

    @property
    def rows(self) -> int:
        return self._rows

    def _reserve(self, nbytes: int) -> None:
        """Make sure the file can grow by `nbytes` (plus room for metadata) before HDF5 tries.

        On a full disk a flush can fail half-way, after the superblock already records the
        new end of file, and HDF5 then refuses to open the file ("truncated file"). A
        refused reservation changes nothing, so the run stops at the last commit.
        """
        try:
            os.posix_fallocate(self._lock, self._end(), nbytes + RESERVE_MARGIN)
        except OSError as e:
            raise OutputFull(e.errno, e.strerror) from None

    def _end(self) -> int:
        """HDF5's end-of-allocation address as last flushed, read from the superblock (the
        file itself may be longer, by what was reserved before)."""
        self._file.flush()
        head = os.pread(self._lock, 48, 0)
        size_at, eoa_at = _SUPERBLOCK_EOA.get(head[8], (0, 0))
        if not size_at or head[size_at] != 8:  # a layout not known here: the whole file
            return self._file.id.get_filesize()
        return int.from_bytes(head[eoa_at : eoa_at + 8], "little")

    def _append(self, batch: RowBatch) -> None:
        self._file  # noqa: B018 - opens the file on the first write
        n, k = self._rows, len(batch)
        if k:
            self._reserve(batch.features.nbytes + 4 * sum(len(p) for p in batch.keys))
            self._put_strings("paths", n, batch.keys)
            for name, data in batch.columns.items():
                if name not in self._ds:
                    self._add_column(name, data)
            for name, ds in self._ds.items():
                if name in FAILURE_DATASETS or name == "paths":
                    continue
                ds.resize(n + k, axis=0)  # a column this batch lacks gets its fill value
                data = batch.features if name == "features" else batch.columns.get(name)
                if data is not None:
                    ds[n : n + k] = data
        self._write_failures()
        self._commit(rows=n + k)

    def _add_column(self, name: str, data: np.ndarray) -> None:
        """A per-row dataset first seen in this batch; rows written before get the fill."""
        shape = data.shape[1:]
        self._ds[name] = self._file.create_dataset(
            name,
            (self._rows, *shape),
            data.dtype,
            maxshape=(None, *shape),
            chunks=(META_CHUNK, *shape),
            fillvalue=fill_value(data.dtype),
        )

    def _write_failures(self) -> None:
        if self.failed == self._failed_written:
            return
        self._put_strings("failed_paths", 0, list(self.failed))
        self._put_strings("failed_errors", 0, list(self.failed.values()))
        self._failed_written = dict(self.failed)

    def _put_strings(self, name: str, start: int, values: list[str]) -> None:
        """Write `values` at rows start.. of a string dataset (ending it there), widening it
        first if one is longer than its width."""
        encoded = [v.encode("utf-8") for v in values]
        ds = self._ds[name]
        longest = max(map(len, encoded), default=0)
        if longest > ds.dtype.itemsize:
            ds = self._widen(name, max(2 * ds.dtype.itemsize, longest), keep=start)
        ds.resize(start + len(values), axis=0)
        if values:
            ds[start:] = np.array(encoded, dtype=ds.dtype)

    def _widen(self, name: str, width: int, keep: int) -> h5py.Dataset:
        """Replace a string dataset by a wider copy of its first `keep` rows, then flush, so
        the old one's space is not reused while the file on disk still points to it."""
        self._reserve(keep * width)
        f, old = self._file, self._ds.pop(name)
        new = f.create_dataset(
            name + ".wider",
            (keep,),
            string_dtype(width),
            maxshape=(None,),
            chunks=old.chunks,
        )
        if keep:
            new[:] = old[:keep]
        del old, f[name]
        f.move(name + ".wider", name)
        self._sync()
        self._ds[name] = f[name]
        return self._ds[name]

    def _commit(self, rows: int | None = None) -> None:
        """Data to disk first, then the row count that makes it visible."""
        self._sync()
        if rows is not None:
            self._file.attrs["rows"] = rows
            self._sync()
            self._rows = rows

    def _sync(self) -> None:
        self._file.flush()
        os.fsync(self._file.id.get_vfd_handle())

    def _close(self, complete: bool) -> None:
        with contextlib.ExitStack() as stack:
            stack.callback(os.close, self._lock)
            stack.callback(lambda: self._handle and self._handle.close())
            self._reserve(0)  # if refused, nothing is dirty: the file closes as last committed
            self._write_failures()
            self._file.attrs["complete"] = complete
            self._sync()
