"""HDF5 output: one file, rows appended batch by batch, each batch committed before it counts.

Crash safety (kill -9, power loss) rests on three things:

* metadata-cache evictions are off, so HDF5 changes its on-disk structure only inside
  `flush()`, never half-way through a batch;
* each batch is written, flushed and fsynced, and only then is the root attribute `rows`
  (the number of committed rows) raised and flushed again;
* readers and resumes trust `rows`, not the dataset lengths: rows past it belong to a
  batch that was cut off, and a resume trims them before appending.

The file is created under a temporary name and renamed into place, so OUT is never a
half-made file.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import h5py
import numpy as np

from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.writers.base import FeatureWriter, RowBatch, fsync_dir

STRING = h5py.string_dtype("utf-8")
ROW_DATASETS = ("features", "paths", "original_size", "content_box")
META_CHUNK = 1024  # rows per chunk of the small per-row datasets


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


def _open(path: Path, mode: str) -> h5py.File:
    try:
        f = h5py.File(path, mode)
    except BlockingIOError:
        raise Sapiens2Error(
            f"{path} is open for writing in another process: wait for it or choose another -o"
        ) from None
    except OSError as e:
        raise Sapiens2Error(f"cannot open {path} ({e}): check its path and permissions") from None
    _no_evictions(f)
    return f


class H5Writer(FeatureWriter):
    """Appends rows to an HDF5 file; see the module docstring for the commit protocol."""

    def __init__(self, path: Path, f: h5py.File, failed: dict[str, str]) -> None:
        super().__init__(path, failed)
        self._file = f
        self._rows = int(f.attrs["rows"])
        self._failed_written = dict(failed)

    @classmethod
    def create(
        cls,
        path: Path,
        settings: dict,
        row_shape: tuple[int, ...],
        dtype: np.dtype,
        letterbox: bool,
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
            f.create_dataset("paths", (0,), STRING, maxshape=(None,), chunks=(META_CHUNK,))
            f.create_dataset(
                "original_size", (0, 2), np.int32, maxshape=(None, 2), chunks=(META_CHUNK, 2)
            )
            if letterbox:
                f.create_dataset(
                    "content_box", (0, 4), np.int32, maxshape=(None, 4), chunks=(META_CHUNK, 4)
                )
            for name in ("failed_paths", "failed_errors"):
                f.create_dataset(name, (0,), STRING, maxshape=(None,), chunks=(256,))
            for key, value in settings.items():
                f.attrs[key] = to_attr(value)
            f.attrs["rows"] = 0
        with open(tmp, "rb+") as raw:
            os.fsync(raw.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
        return cls(path, _open(path, "r+"), {})

    @classmethod
    def resume(cls, path: Path, failed: dict[str, str]) -> H5Writer:
        """Reopen an existing output to append, dropping rows of a batch that was cut off."""
        f = _open(path, "r+")
        rows = int(f.attrs["rows"])
        for name in ROW_DATASETS:
            if name in f and f[name].shape[0] != rows:
                f[name].resize(rows, axis=0)
        f.attrs["complete"] = False
        writer = cls(path, f, failed)
        writer._commit()
        return writer

    @property
    def rows(self) -> int:
        return self._rows

    def _append(self, batch: RowBatch) -> None:
        n, k = self._rows, len(batch)
        f = self._file
        if k:
            columns = {
                "features": batch.features,
                "paths": batch.paths,
                "original_size": batch.original_size,
                "content_box": batch.content_box,
            }
            for name, data in columns.items():
                if name in f:
                    f[name].resize(n + k, axis=0)
                    f[name][n : n + k] = data
        self._write_failures()
        self._commit(rows=n + k)

    def _write_failures(self) -> None:
        if self.failed == self._failed_written:
            return
        for name, values in (
            ("failed_paths", list(self.failed)),
            ("failed_errors", list(self.failed.values())),
        ):
            self._file[name].resize(len(values), axis=0)
            if values:
                self._file[name][:] = values
        self._failed_written = dict(self.failed)

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

    def close(self, complete: bool) -> None:
        with contextlib.ExitStack() as stack:
            stack.callback(self._file.close)
            self._write_failures()
            self._file.attrs["complete"] = complete
            self._sync()
