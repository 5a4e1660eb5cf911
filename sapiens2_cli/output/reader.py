"""Reading an extract output of either format, committed rows only.

Used by resume, `viz` and merge. Plain h5py/numpy readers need none of this; see
docs/format.md for that. Only rows that a writer committed are shown: in HDF5 the first
`rows` (root attribute), in npy the shards the manifest lists.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType, TracebackType

import h5py
import numpy as np

from sapiens2_cli.config.choices import Layout, StorageDtype
from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.remote import is_url, local_path
from sapiens2_cli.output.base import FORMAT_VERSION, concat_columns, filled
from sapiens2_cli.output.hdf5.writer import NOT_COLUMNS, from_attr
from sapiens2_cli.output.npy.writer import MANIFEST, MANIFEST_FORMAT
from sapiens2_cli.reduce.losses import PCA, dequantize, scale_shape
from sapiens2_cli.output.url.store import RangeArray, Store

Rows = slice | Sequence[int] | np.ndarray
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
SHARD_FILES = frozenset({"index", "rows", "features", "scales", "paths"})  # the rest: columns


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


class H5Features(FeatureFile):
    def __init__(self, path: Path) -> None:
        try:
            # No lock: reading a file that a running extract is appending to is allowed;
            # `rows` and `failures` only cover batches already committed.
            self._file, self._path = h5py.File(path, "r", locking=False), path
        except OSError as e:
            raise _not_ours(path, f"HDF5 cannot open it: {e}") from None
        try:
            f = self._file
            if "features" not in f or "format_version" not in f.attrs:
                raise _not_ours(path, "it has no features dataset or format_version attribute")
            _check_version(path, f.attrs["format_version"])
            if f["features"].is_virtual:
                _check_sources(path, f["features"])
            attrs = {k: from_attr(v) for k, v in f.attrs.items()}
            n = min(int(attrs.pop("rows", 0)), f["features"].shape[0], f["paths"].shape[0])
            m = int(attrs.pop("failures", f["failed_paths"].shape[0]))
            self.reductions = json.loads(attrs.pop("reductions", "{}"))
            self.settings = attrs
            self.row_shape = f["features"].shape[1:]
            self.paths = list(f["paths"].asstr(errors="surrogateescape")[:n])
            self._columns = {name: f[name][:n] for name in f if name not in NOT_COLUMNS}
            keys = f["failed_paths"].asstr(errors="surrogateescape")[:m]
            reasons = f["failed_errors"].asstr(errors="surrogateescape")[:m]
            self.failed = replay(zip(keys, reasons, strict=True))
            self.failed_records = m
            # looked up once: FeatureDataset reads one row at a time
            self._datasets = {name: f[name] for name in ("features", "scales") if name in f}
        except BaseException:
            self._file.close()
            raise

    def _read_sorted(self, index: np.ndarray, name: str) -> np.ndarray:
        data = self._datasets[name]
        if index.size == index[-1] - index[0] + 1:  # a contiguous run: one hyperslab
            return data[index[0] : index[-1] + 1]
        return data[index]

    def close(self) -> None:
        self._file.close()


class _Folder:
    """A local npy output's files, by name, as output/url/store.py's Store gives a URL's."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self, name: str) -> bytes:
        return (self.path / name).read_bytes()

    def load(self, name: str) -> np.ndarray:
        return np.load(self.path / name)

    def array(self, name: str) -> np.ndarray:
        return np.load(self.path / name, mmap_mode="r")


class NpyFeatures(FeatureFile):
    def __init__(self, path: Path | Store) -> None:
        folder = path if isinstance(path, Store) else _Folder(path)
        try:
            manifest = json.loads(folder.read(MANIFEST).decode("utf-8"))
        except (OSError, ValueError) as e:
            raise _not_ours(path, f"its {MANIFEST} cannot be read: {e}") from None
        if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
            raise _not_ours(path, f"its {MANIFEST} is not a {MANIFEST_FORMAT} manifest")
        _check_version(path, manifest.get("format_version"))
        self._path, self._folder = path, folder
        self._shards = shards = manifest["shards"]
        self.settings = manifest["settings"]
        self.reductions = manifest.get("reductions", {})
        records = [(r["path"], r["error"]) for r in manifest.get("failed", [])]  # inline: older
        try:
            for name in manifest.get("failed_files", []):
                records += [(r["path"], r["error"]) for r in json.loads(folder.read(name))]
            self.paths = [p for s in shards for p in folder.load(s["paths"]).tolist()]
            self._columns = concat_columns(
                [
                    (
                        s["rows"],
                        {k: folder.load(f) for k, f in s.items() if k not in SHARD_FILES},
                    )
                    for s in shards
                ]
            )
        except FileNotFoundError as e:
            raise _missing(path, e.filename) from None
        self.failed = replay(records)
        self.failed_records = len(records)
        self.row_shape = tuple(manifest.get("row_shape") or self._row_shape())
        self._starts = np.cumsum([0] + [s["rows"] for s in shards])  # row offset per shard
        self._open: dict[tuple[int, str], np.ndarray | RangeArray] = {}  # by (shard, name)

    def _row_shape(self) -> tuple[int, ...]:
        """For a manifest that does not record it (written before it did)."""
        return self._shard(0, "features").shape[1:] if self._shards else ()

    def _shard(self, k: int, name: str) -> np.ndarray | RangeArray:
        """Shard `k`'s `name` file (features, scales): a memory map, or ranged reads at a URL."""
        if (k, name) not in self._open:
            self._open[k, name] = self._folder.array(self._shards[k][name])
        return self._open[k, name]

    def _read_sorted(self, index: np.ndarray, name: str) -> np.ndarray:
        shard_of = np.searchsorted(self._starts, index, side="right") - 1
        parts = [
            np.asarray(self._shard(k, name)[index[shard_of == k] - self._starts[k]])
            for k in np.unique(shard_of)
        ]
        return np.concatenate(parts)


def _not_ours(path: Path | Store, why: str) -> Sapiens2Error:
    return Sapiens2Error(
        f"{path} is not a sapiens2 extract output ({why}): pass a file or folder written by "
        "`sapiens2 extract`"
    )


def _check_sources(path: Path, features: h5py.Dataset) -> None:
    """A virtual `features` (a join of parts) reads as fill values where a part is missing:
    refuse instead."""
    for source in features.virtual_sources():
        where = path.parent / source.file_name  # relative to OUT's folder, as HDF5 resolves
        if not where.is_file():
            raise _missing(path, where)


def _missing(path: Path, part: object) -> Sapiens2Error:
    return Sapiens2Error(
        f"{path} joins parts, and {part} is missing: keep the parts folder beside it (they "
        "move together), or rerun the command that made it"
    )


def _check_version(path: Path, version: object) -> None:
    if from_attr(version) != FORMAT_VERSION:
        raise Sapiens2Error(
            f"{path} has format_version {from_attr(version)!r}, but this sapiens2-cli reads "
            f"version {FORMAT_VERSION}: upgrade sapiens2-cli"
        )


def detect_format(path: str | Path) -> str | None:
    """'h5' or 'npy' for an existing output, None if nothing is there (or it is not ours)."""
    path = Path(path)
    if path.is_dir():
        return "npy" if (path / MANIFEST).is_file() else None
    if path.is_file():
        with open(path, "rb") as f:
            return "h5" if f.read(8) == HDF5_SIGNATURE else None
    return None


def is_output(path: str | Path) -> bool:
    """Whether `path` carries this tool's format markers (an HDF5 file with `features` and a
    `format_version` attribute; a folder whose manifest says it is ours): what --overwrite
    may replace. Any other HDF5 file or folder is someone else's."""
    path = Path(path)
    try:
        if detect_format(path) == "h5":
            with h5py.File(path, "r", locking=False) as f:
                return "features" in f and "format_version" in f.attrs
        if detect_format(path) == "npy":
            manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
            return isinstance(manifest, dict) and manifest.get("format") == MANIFEST_FORMAT
    except (OSError, ValueError):
        pass
    return False


def open_features(path: str | Path) -> FeatureFile:
    """Open an extract output (HDF5 file or npy folder, or an npy output's URL:
    `s3://bucket/feats/`) for reading; use it as a context."""
    if is_url(str(path)):
        return NpyFeatures(Store(str(path)))
    path = Path(local_path(str(path)))
    if not path.exists():
        raise Sapiens2Error(f"{path} does not exist: pass the -o path of a `sapiens2 extract` run")
    kind = detect_format(path)
    if kind == "h5":
        return H5Features(path)
    if kind == "npy":
        return NpyFeatures(path)
    raise _not_ours(path, "neither an HDF5 file nor a folder with a manifest.json")
