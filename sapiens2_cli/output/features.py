"""An extract output opened for reading, committed rows only, whatever its format: what
every reader gives (`FeatureFile`), and the checks and failure-log rule they share. The
readers of each format are output/hdf5/reader.py and output/npy/reader.py;
output/reader.py opens the right one."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType, TracebackType

import numpy as np

from sapiens2_cli.config.choices import Layout, StorageDtype
from sapiens2_cli.config.values import Part
from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.output.rows import FORMAT_VERSION, filled
from sapiens2_cli.reduce.losses import PCA, dequantize, scale_shape

Rows = slice | Sequence[int] | np.ndarray


class FeatureFile(ABC):
    """An extract output opened for reading: settings, keys, per-row columns, features.

    `columns` names the per-row arrays beside `features` and `paths` (original_size,
    content_box, boxes, ...); `column(name)` gives one as (n, *shape), holding the fill
    value (NaN / -1) on rows written without it.
    """

    settings: dict
    paths: list[str]  # one key per row; non-UTF-8 file names as surrogate escapes
    failed: list[tuple[str, str]]  # (key, reason) of items without a row, one per key
    failed_records: int  # records in the failure log, superseded ones included
    row_shape: tuple[int, ...]  # shape of one row of features
    reductions: dict  # name -> parameters and measured loss (reduce/losses.py)
    _columns: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def columns(self) -> Mapping[str, np.ndarray]:
        """Every per-row column by name, each (n, *shape), read-only."""
        return MappingProxyType(self._columns)

    def column(self, name: str) -> np.ndarray:
        """Column `name` for every row, (n, *shape)."""
        if name not in self._columns:
            raise KeyError(f"no column {name!r}: this output has {self.columns}")
        return self._columns[name]

    @property
    def original_size(self) -> np.ndarray:
        """(n, 2) int32 (height, width) after EXIF; -1 where unknown."""
        return self._columns.get("original_size", filled(len(self), (2,), np.dtype(np.int32)))

    @property
    def content_box(self) -> np.ndarray | None:
        """(n, 4) int32 (top, left, height, width); letterbox only."""
        return self._columns.get("content_box")

    @property
    def row_nbytes(self) -> int:
        """Bytes one row's features take as stored (int8: with its float16 scales)."""
        dtype = StorageDtype.parse(self.settings.get("dtype", "float32"), "dtype")
        nbytes = int(np.prod(self.row_shape)) * dtype.numpy.itemsize
        if dtype == StorageDtype.INT8:
            nbytes += 2 * int(np.prod(scale_shape(self.row_shape, self.settings["layout"])))
        return nbytes

    def read(self, rows: Rows) -> np.ndarray:
        """Features of `rows` (a slice or sorted indices), shaped (k, n_layers, ...) as
        stored; int8 rows come back as float32 q * scale (`read_raw` gives both as stored)."""
        q, scales = self.read_raw(rows)
        if scales is None:
            return q
        return dequantize(q, scales, self.settings["layout"])

    def read_raw(self, rows: Rows) -> tuple[np.ndarray, np.ndarray | None]:
        """Features of `rows` exactly as stored, and their float16 int8 scales (None unless
        the dtype is int8), row-aligned."""
        if isinstance(rows, slice):
            index = np.arange(len(self))[rows]
        else:
            index = np.asarray(rows, dtype=np.int64).reshape(-1)
            if index.size and (index.min() < 0 or index.max() >= len(self)):
                raise IndexError(f"rows out of range for an output with {len(self)} rows")
        unique, inverse = np.unique(index, return_inverse=True)
        int8 = self.settings.get("dtype") == "int8"
        if not unique.size:
            dtype = StorageDtype.parse(self.settings.get("dtype", "float32"), "dtype")
            shape = scale_shape(self.row_shape, self.settings["layout"]) if int8 else None
            empty = np.empty((0, *self.row_shape), dtype.numpy)
            return empty, None if shape is None else np.empty((0, *shape), np.float16)
        q = self._read_sorted(unique, "features")[inverse]
        return q, self._read_sorted(unique, "scales")[inverse] if int8 else None

    def reconstruct(self, rows: Rows, projection: str | Path | None = None) -> np.ndarray:
        """Rows of an output made with --project mapped back to D: y @ components + mean,
        float32, shaped as the unprojected rows would be. The projection is the file OUT
        records, or `projection`; either must have the sha256 OUT records."""
        from sapiens2_cli.reduce.projection import recorded_projection

        found = recorded_projection(self._path, self.settings, projection)
        axis = Layout(self.settings.get("layout", Layout.TOKENS)).feature_axis
        return found.reconstruct(self.read(rows), axis=axis)

    @property
    def variance_kept_written(self) -> float | None:
        """With --project: the share of variance the projection kept on the rows written
        (the `pca` reduction's running sums); None otherwise or before any row."""
        return self.reductions.get(PCA, {}).get("loss", {}).get("variance_kept_written")

    @abstractmethod
    def _read_sorted(self, index: np.ndarray, name: str) -> np.ndarray:
        """Row-aligned array `name` (features, scales) at strictly increasing row indices
        (at least one)."""

    def close(self) -> None:  # noqa: B027 - most readers hold nothing open
        pass

    def __enter__(self) -> FeatureFile:
        return self

    def __exit__(
        self, kind: type | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


@dataclass
class PartFile:
    """An output opened to be joined: where it is, its reader, and the part it records."""

    path: Path
    file: FeatureFile
    part: Part | None


def replay(records: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The failure log read as the writer keeps it: a key's last record is its word, and an
    empty reason (a tombstone: the key got a row later) means it has none."""
    failed: dict[str, str] = {}
    for key, reason in records:
        if reason:
            failed[key] = reason
        else:
            failed.pop(key, None)
    return list(failed.items())


def not_ours(path: object, why: str) -> Sapiens2Error:
    return Sapiens2Error(
        f"{path} is not a sapiens2 extract output ({why}): pass a file or folder written by "
        "`sapiens2 extract`"
    )


def missing_part(path: Path, part: object) -> Sapiens2Error:
    return Sapiens2Error(
        f"{path} joins parts, and {part} is missing: keep the parts folder beside it (they "
        "move together), or rerun the command that made it"
    )


def check_version(path: Path, version: object) -> None:
    if version != FORMAT_VERSION:
        raise Sapiens2Error(
            f"{path} has format_version {version!r}, but this sapiens2-cli reads "
            f"version {FORMAT_VERSION}: upgrade sapiens2-cli"
        )
