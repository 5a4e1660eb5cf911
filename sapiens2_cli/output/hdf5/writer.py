"""HDF5 output: one file, rows appended batch by batch, each batch committed before it counts.

Crash safety (kill -9, power loss) rests on these:

* metadata-cache evictions are off, so HDF5 changes its on-disk structure only inside
  `flush()`, never half-way through a batch;
* each batch (rows and failure records) is written, flushed and fsynced, and only then are
  the root attributes `rows` and `failures` (how many rows and failure records are
  committed) raised and flushed again;
* readers and resumes trust `rows` and `failures`, not the dataset lengths: what lies past
  them belongs to a batch that was cut off, and a resume trims it before appending;
* failure records are appended like rows, so recording one costs the same at the millionth
  as at the first. A key whose record is superseded (it got a row later, or failed again)
  gets a new record: its last record is its word, and an empty reason (a tombstone) says
  it has none. `close` compacts the log into new datasets that replace the old ones within
  one flush, so a normally closed file holds one record per failed key;
* strings are fixed-width, widened when a longer one comes: variable-length strings live
  in HDF5's global heap, and a kill can leave a chunk pointing at heap objects that never
  reached the disk (the next write to that chunk then fails). Whatever frees file space
  (a widening, trimming, a compaction) is flushed before the next batch allocates any, so
  new data never lands where the last commit's structure points.

Keys are stored as their UTF-8 bytes with surrogate escapes turned back into the original
bytes (`surrogateescape`), so a non-UTF-8 file name round-trips exactly. A resumed file has
`complete` cleared (durably) before any new row. The file is created under a temporary name
and renamed into place, so OUT is never a half-made file. One writer at a time: see
`OutputLock`.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.output.atomic import built_in_place
from sapiens2_cli.output.disk import OutputFull
from sapiens2_cli.output.lock import OutputLock
from sapiens2_cli.output.rows import RowBatch, fill_value, filled
from sapiens2_cli.output.writer import FeatureWriter
from sapiens2_cli.reduce.losses import add_losses, scale_shape

FAILED = ("failed_paths", "failed_errors")
STRINGS = ("paths", *FAILED)
NOT_COLUMNS = frozenset({"features", "scales", *STRINGS})  # the rest: per-row columns
META_CHUNK = 1024  # rows per chunk of the small per-row datasets
STRING_WIDTH = 256  # initial bytes per string; widened as needed
RESERVE_MARGIN = 2**20  # bytes reserved beyond a batch's data, for HDF5's metadata
#: Superblock version -> byte offsets of its "size of offsets" and "end of file address"
#: fields (HDF5 file format specification, section II.A).
_SUPERBLOCK_EOA = {0: (13, 40), 1: (13, 44), 2: (9, 28), 3: (9, 28)}


def string_dtype(width: int) -> np.dtype:
    return h5py.string_dtype("utf-8", length=width)


def encode(values: Sequence[str]) -> list[bytes]:
    """Keys and reasons as stored: UTF-8, a non-UTF-8 file name as its original bytes."""
    return [v.encode("utf-8", "surrogateescape") for v in values]


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

    def __init__(
        self, path: Path, failed: dict[str, str], lock: OutputLock | None, stale: bool = False
    ) -> None:
        super().__init__(path, failed, lock, stale)
        try:
            self._raw = os.open(path, os.O_RDWR)  # for fallocate and the superblock
        except OSError as e:
            raise Sapiens2Error(f"cannot open {path} ({e}): check it and its permissions") from None
        try:
            with h5py.File(path, "r+", locking=False) as f:
                self._rows = int(f.attrs["rows"])
                self._failures = int(f.attrs["failures"])
                self.reductions = json.loads(f.attrs.get("reductions", "{}"))
                if f.attrs.get("complete"):  # resumed: not complete until this run says so
                    f.attrs["complete"] = False
            os.fsync(self._raw)
        except OSError as e:
            os.close(self._raw)
            raise Sapiens2Error(f"cannot open {path} ({e}): check it and its permissions") from None
        self._handle: h5py.File | None = None
        # Held for the writer's life: a dataset object freed after a failed write makes HDF5
        # try (and fail) to write again, with tracebacks, from the garbage collector.
        self._ds: dict[str, h5py.Dataset] = {}

    @property
    def _file(self) -> h5py.File:
        """The file, opened at the first write rather than at construction: by then the decode
        workers have been forked, and a fork must not inherit an open HDF5 file (its copy of
        the library's state could write to it). Opening trims what follows the last commit."""
        if self._handle is None:
            f = self._handle = h5py.File(self.path, "r+", locking=False)
            _no_evictions(f)
            self._ds = {name: f[name] for name in f}
            for name, ds in self._ds.items():
                end = self._failures if name in FAILED else self._rows
                if ds.shape[0] != end:
                    ds.resize(end, axis=0)
            self._commit()
        return self._handle

    @classmethod
    def create(
        cls,
        path: Path,
        settings: dict,
        row_shape: tuple[int, ...],
        dtype: np.dtype,
        compression: str | None,
        lock: OutputLock | None,
        reductions: dict | None = None,
    ) -> H5Writer:
        """A new, empty output at `path` (made under a temporary name, then renamed); int8
        rows get a `scales` dataset beside `features`."""
        with built_in_place(path, ".creating") as tmp, h5py.File(tmp, "w") as f:
            f.create_dataset(
                "features",
                shape=(0, *row_shape),
                maxshape=(None, *row_shape),
                chunks=(1, *row_shape),  # one image per chunk
                dtype=dtype,
                compression=compression,
            )
            if np.dtype(dtype) == np.int8:
                shape = scale_shape(row_shape, settings["layout"])
                maxshape, chunks = (None, *shape), (1, *shape)
                f.create_dataset(
                    "scales", (0, *shape), np.float16, maxshape=maxshape, chunks=chunks
                )
            for name, chunk in (("paths", META_CHUNK), *((n, 256) for n in FAILED)):
                f.create_dataset(
                    name, (0,), string_dtype(STRING_WIDTH), maxshape=(None,), chunks=(chunk,)
                )
            for key, value in settings.items():
                f.attrs[key] = to_attr(value)
            f.attrs["rows"] = 0
            f.attrs["failures"] = 0
            if reductions:
                f.attrs["reductions"] = json.dumps(reductions)
        return cls(path, {}, lock)

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
            os.posix_fallocate(self._raw, self._end(), nbytes + RESERVE_MARGIN)
        except OSError as e:
            raise OutputFull(e.errno, e.strerror) from None

    def _end(self) -> int:
        """HDF5's end-of-allocation address as last flushed, read from the superblock (the
        file itself may be longer, by what was reserved before)."""
        self._file.flush()
        head = os.pread(self._raw, 48, 0)
        size_at, eoa_at = _SUPERBLOCK_EOA.get(head[8], (0, 0))
        if not size_at or head[size_at] != 8:  # a layout not known here: the whole file
            return self._file.id.get_filesize()
        return int.from_bytes(head[eoa_at : eoa_at + 8], "little")

    def _append(self, batch: RowBatch) -> None:
        if not len(batch) and not self._log:
            return
        n, k, m = self._rows, len(batch), self._failures
        arrays = {"features": batch.features, "scales": batch.scales, **batch.columns}
        data = sum(a.nbytes for a in arrays.values() if a is not None)
        strings = sum(len(s) for s in (*batch.keys, *(a + b for a, b in self._log)))
        self._reserve(data + 4 * strings)
        log, self._log = self._log, []
        if k:
            self._put_strings("paths", n, batch.keys)
            for name, values in batch.columns.items():
                if name not in self._ds:
                    self._ds[name] = self._new_column(name, values)
            for name, ds in self._ds.items():
                if name not in STRINGS:
                    ds.resize(n + k, axis=0)
                    ds[n:] = arrays[name] if name in arrays else filled(k, ds.shape[1:], ds.dtype)
        if log:
            self._put_strings("failed_paths", m, [key for key, _ in log])
            self._put_strings("failed_errors", m, [reason for _, reason in log])
        if k:
            add_losses(self.reductions, batch.errors, batch.energy)
        self._commit(rows=n + k, failures=m + len(log))

    def _new_column(self, name: str, values: np.ndarray) -> h5py.Dataset:
        """A column first carried now: the rows before it read as its fill value."""
        shape = values.shape[1:]
        return self._file.create_dataset(
            name,
            (self._rows, *shape),
            values.dtype,
            maxshape=(None, *shape),
            chunks=(META_CHUNK, *shape),
            fillvalue=fill_value(values.dtype),
        )

    def _put_strings(self, name: str, start: int, values: list[str]) -> None:
        """Write `values` at rows start.. of a string dataset, widening it first if one is
        longer than its width."""
        encoded = encode(values)
        ds = self._ds[name]
        longest = max(map(len, encoded), default=0)
        if longest > ds.dtype.itemsize:
            width = max(2 * ds.dtype.itemsize, longest)
            self._reserve(start * width)
            ds = self._replace(name, ds[:start], width)
            self._sync()  # the old dataset's space is free only once the file forgets it
        ds.resize(start + len(values), axis=0)
        ds[start:] = np.array(encoded, dtype=ds.dtype)

    def _replace(self, name: str, values: np.ndarray | list[bytes], width: int) -> h5py.Dataset:
        """Swap string dataset `name` for a new one of `width` bytes holding `values`; the
        caller flushes, so the file on disk has either the old one or the new one."""
        f, old = self._file, self._ds.pop(name)
        new = f.create_dataset(
            name + ".new", (len(values),), string_dtype(width), maxshape=(None,), chunks=old.chunks
        )
        if len(values):
            new[:] = np.array(values, dtype=new.dtype)
        del old, f[name]
        f.move(name + ".new", name)
        self._ds[name] = f[name]
        return self._ds[name]

    def _compact(self) -> None:
        """One record per failed key: the log rewritten from `failed`, at close."""
        columns = encode(list(self.failed)), encode(list(self.failed.values()))
        widths = [max([STRING_WIDTH, *map(len, c)]) for c in columns]
        self._reserve(len(self.failed) * sum(widths))
        for name, values, width in zip(FAILED, columns, widths, strict=True):
            self._replace(name, values, width)
        self._failures = len(self.failed)
        self._file.attrs["failures"] = self._failures

    def _commit(self, rows: int | None = None, failures: int | None = None) -> None:
        """Data to disk first, then the counts that make it visible."""
        self._sync()
        if rows is not None:
            self._file.attrs["rows"] = rows
            self._file.attrs["failures"] = failures
            if self.reductions:  # its loss counts exactly the committed rows
                self._file.attrs["reductions"] = json.dumps(self.reductions)
            self._sync()
            self._rows, self._failures = rows, failures

    def _sync(self) -> None:
        self._file.flush()
        os.fsync(self._file.id.get_vfd_handle())

    def _close(self, complete: bool) -> None:
        with contextlib.ExitStack() as stack:
            stack.callback(os.close, self._raw)
            stack.callback(lambda: self._handle and self._handle.close())
            self._reserve(0)  # if refused, nothing is dirty: the file closes as last committed
            if self._stale:
                self._compact()
            self._file.attrs["complete"] = complete
            self._sync()
