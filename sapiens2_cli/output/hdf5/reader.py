"""Reading an HDF5 output: its first `rows` rows (a root attribute the writer moves only
after the rows are flushed), the failure log, settings and columns."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from sapiens2_cli.output.features import (
    FeatureFile,
    check_version,
    missing_part,
    not_ours,
    replay,
)
from sapiens2_cli.output.hdf5.writer import NOT_COLUMNS, from_attr

#: The datasets every HDF5 output has beside `features`.
NEEDED = ("paths", "failed_paths", "failed_errors")


class H5Features(FeatureFile):
    def __init__(self, path: Path) -> None:
        try:
            # No lock: reading a file that a running extract is appending to is allowed;
            # `rows` and `failures` only cover batches already committed.
            self._file, self._path = h5py.File(path, "r", locking=False), path
        except OSError as e:
            raise not_ours(path, f"HDF5 cannot open it: {e}") from None
        try:
            f = self._file
            if "features" not in f or "format_version" not in f.attrs:
                raise not_ours(path, "it has no features dataset or format_version attribute")
            check_version(path, from_attr(f.attrs["format_version"]))
            lacking = [name for name in NEEDED if name not in f]
            if lacking:  # a file made by hand with h5py, say
                raise not_ours(path, f"it has no {' or '.join(lacking)} dataset")
            if f["features"].is_virtual:
                _check_sources(path, f["features"])
            attrs = {k: from_attr(v) for k, v in f.attrs.items()}
            n = min(int(attrs.pop("rows", 0)), f["features"].shape[0], f["paths"].shape[0])
            m = int(attrs.pop("failures"))
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


def _check_sources(path: Path, features: h5py.Dataset) -> None:
    """A virtual `features` (a join of parts) reads as fill values where a part is missing:
    refuse instead."""
    for source in features.virtual_sources():
        where = path.parent / source.file_name  # relative to OUT's folder, as HDF5 resolves
        if not where.is_file():
            raise missing_part(path, where)
