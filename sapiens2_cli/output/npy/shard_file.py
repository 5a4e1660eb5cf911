"""The files of an npy output, each written whole or not at all: a shard's features streamed
into a .npy under a temporary name (`ShardFile`), and any other file (`write_atomic`);
either is fsynced and renamed into place, and a failure removes the temporary file at once.
The commit protocol that orders them: output/npy/writer.py.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from sapiens2_cli.output.atomic import removed_on_failure


def npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    """The header np.save writes for a C-order array of `dtype` and `shape` (format 1.0).
    numpy pads it for in-place growth, so its length does not depend on the row count."""
    header = io.BytesIO()
    descr = np.lib.format.dtype_to_descr(np.dtype(dtype))
    np.lib.format.write_array_header_1_0(
        header, {"descr": descr, "fortran_order": False, "shape": shape}
    )
    return header.getvalue()


def write_atomic(path: Path, data: bytes | np.ndarray) -> None:
    """`data` (an array as .npy) to a temporary name, fsync, rename over `path`; if any of
    it fails the temporary file goes at once. An array's room is reserved first: numpy
    reports a full disk as a short write without an errno, the reservation as ENOSPC."""
    tmp = path.with_name(path.name + ".tmp")
    with removed_on_failure(tmp):
        with open(tmp, "wb") as f:
            if isinstance(data, np.ndarray):
                size = len(npy_header(data.dtype, data.shape)) + data.nbytes
                os.posix_fallocate(f.fileno(), 0, size)
                np.save(f, data)
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


class ShardFile:
    """The features file of the shard being written: a .npy under a temporary name that
    grows batch by batch, its header (rewritten by `finish`) first. Each batch's room is
    reserved before it is written; if anything fails the temporary file goes at once.
    (Starting each batch's write-back at once, with POSIX_FADV_DONTNEED, made it slower:
    0.64 GB/s against 1.03, median of 3, docs/performance.md.)"""

    def __init__(self, path: Path, dtype: np.dtype, row_shape: tuple[int, ...]) -> None:
        self.path, self.rows = path, 0
        self._tmp = path.with_name(path.name + ".tmp")
        self._dtype, self._row_shape = np.dtype(dtype), tuple(row_shape)
        self._file = open(self._tmp, "wb")  # noqa: SIM115 (open until finish)
        with self._removed_on_failure():
            self._file.write(self._header())

    def _header(self) -> bytes:
        return npy_header(self._dtype, (self.rows, *self._row_shape))

    @contextlib.contextmanager
    def _removed_on_failure(self) -> Iterator[None]:
        with removed_on_failure(self._tmp):
            try:
                yield
            except BaseException:
                self._file.close()
                raise

    def append(self, features: np.ndarray) -> None:
        """Write rows at the end of the file (their room reserved first)."""
        if features.dtype != self._dtype or features.shape[1:] != self._row_shape:
            raise ValueError(f"rows {features.shape} {features.dtype} do not fit this shard")
        data = np.ascontiguousarray(features)
        with self._removed_on_failure():
            start = self._file.tell()
            os.posix_fallocate(self._file.fileno(), 0, start + data.nbytes)
            self._file.write(data.data)
        self.rows += len(data)

    def finish(self) -> None:
        """The header with the final row count, fsync, rename into place."""
        with self._removed_on_failure():
            self._file.seek(0)
            self._file.write(self._header())
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.replace(self._tmp, self.path)
