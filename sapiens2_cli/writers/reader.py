"""Reading an extract output of either format, committed rows only.

Used by resume, `viz` and merge. Plain h5py/numpy readers need none of this; see
docs/format.md for that. Only rows that a writer committed are shown: in HDF5 the first
`rows` (root attribute), in npy the shards the manifest lists.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import h5py
import numpy as np

from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.writers.base import FORMAT_VERSION, concat_columns
from sapiens2_cli.writers.hdf5 import from_attr
from sapiens2_cli.writers.npy import MANIFEST, MANIFEST_FORMAT

Rows = slice | Sequence[int] | np.ndarray
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
NOT_COLUMNS = ("paths", "failed_paths", "failed_errors")  # beside features: not per-row data


class FeatureFile(ABC):
    """An extract output opened for reading: settings, row-aligned metadata, features."""

    settings: dict
    paths: list[str]  # one key per row
    columns: dict[str, np.ndarray]  # per-row metadata by dataset name, each (n, ...)
    failed: list[tuple[str, str]]  # (key, reason) of inputs without a row

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def original_size(self) -> np.ndarray:
        """(n, 2) int32, (height, width) after EXIF."""
        return self.columns.get("original_size", np.empty((0, 2), np.int32))

    @property
    def content_box(self) -> np.ndarray | None:
        """(n, 4) int32 (top, left, height, width); letterbox only."""
        return self.columns.get("content_box")

    def read(self, rows: Rows) -> np.ndarray:
        """Features of `rows` (a slice or sorted indices), shaped (k, n_layers, ...) as stored."""
        if isinstance(rows, slice):
            index = np.arange(len(self))[rows]
        else:
            index = np.asarray(rows, dtype=np.int64).reshape(-1)
            if index.size and (index.min() < 0 or index.max() >= len(self)):
                raise IndexError(f"rows out of range for an output with {len(self)} rows")
        unique, inverse = np.unique(index, return_inverse=True)
        return self._read_sorted(unique)[inverse]

    @abstractmethod
    def _read_sorted(self, index: np.ndarray) -> np.ndarray:
        """Features at strictly increasing row indices."""

    def close(self) -> None:  # noqa: B027 - most readers hold nothing open
        pass

    def __enter__(self) -> FeatureFile:
        return self

    def __exit__(
        self, kind: type | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class H5Features(FeatureFile):
    def __init__(self, path: Path) -> None:
        try:
            # No lock: reading a file that a running extract is appending to is allowed;
            # `rows` only covers batches already committed.
            self._file = h5py.File(path, "r", locking=False)
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
            self.settings = attrs
            self._features = f["features"]
            self._n = n
            self.paths = list(f["paths"].asstr()[:n])
            self.columns = {
                name: f[name][:n] for name in f if name not in ("features", *NOT_COLUMNS)
            }
            failed_paths = f["failed_paths"].asstr()[:]
            failed_errors = f["failed_errors"].asstr()[:]
            self.failed = list(zip(failed_paths, failed_errors, strict=False))
        except BaseException:
            self._file.close()
            raise

    def _read_sorted(self, index: np.ndarray) -> np.ndarray:
        if index.size == 0:
            return np.empty((0, *self._features.shape[1:]), self._features.dtype)
        if index.size == index[-1] - index[0] + 1:  # a contiguous run: one hyperslab
            return self._features[index[0] : index[-1] + 1]
        return self._features[index]

    def close(self) -> None:
        self._file.close()


class NpyFeatures(FeatureFile):
    def __init__(self, path: Path) -> None:
        try:
            manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise _not_ours(path, f"its {MANIFEST} cannot be read: {e}") from None
        if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
            raise _not_ours(path, f"its {MANIFEST} is not a {MANIFEST_FORMAT} manifest")
        _check_version(path, manifest.get("format_version"))
        self._path = path
        self._shards = manifest["shards"]
        self.settings = manifest["settings"]
        self.failed = [(item["path"], item["error"]) for item in manifest["failed"]]
        try:
            self.paths = [p for s in self._shards for p in np.load(path / s["paths"]).tolist()]
        except FileNotFoundError as e:
            raise _missing(path, e.filename) from None
        self.columns = self._read_columns()
        self._starts = np.cumsum([0] + [s["rows"] for s in self._shards])  # row offset per shard
        self._features: dict[int, np.ndarray] = {}

    def _read_columns(self) -> dict[str, np.ndarray]:
        """Every per-row column over the shards (filled where a shard lacks one)."""
        skip = ("index", "rows", "features", *NOT_COLUMNS)
        return concat_columns(
            [
                (
                    shard["rows"],
                    {k: np.load(self._path / v) for k, v in shard.items() if k not in skip},
                )
                for shard in self._shards
            ]
        )

    def _shard(self, k: int) -> np.ndarray:
        if k not in self._features:
            self._features[k] = np.load(self._path / self._shards[k]["features"], mmap_mode="r")
        return self._features[k]

    def _read_sorted(self, index: np.ndarray) -> np.ndarray:
        shard_of = np.searchsorted(self._starts, index, side="right") - 1
        parts = [
            np.asarray(self._shard(k)[index[shard_of == k] - self._starts[k]])
            for k in np.unique(shard_of)
        ]
        if not parts:
            dtype = np.float16 if self.settings.get("dtype") == "float16" else np.float32
            return np.empty((0,), dtype)
        return np.concatenate(parts)


def _not_ours(path: Path, why: str) -> Sapiens2Error:
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


def open_features(path: str | Path) -> FeatureFile:
    """Open an extract output (HDF5 file or npy folder) for reading; use it as a context."""
    path = Path(path)
    if not path.exists():
        raise Sapiens2Error(f"{path} does not exist: pass the -o path of a `sapiens2 extract` run")
    kind = detect_format(path)
    if kind == "h5":
        return H5Features(path)
    if kind == "npy":
        return NpyFeatures(path)
    raise _not_ours(path, "neither an HDF5 file nor a folder with a manifest.json")
