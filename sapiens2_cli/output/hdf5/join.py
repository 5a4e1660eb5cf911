"""The HDF5 side of `merge`: a joined file whose `features` (and int8's `scales`) is a virtual
dataset mapping each part's committed rows by a path relative to OUT's folder, so OUT and
OUT.parts move together; the small per-row arrays are copied into it. `record_join` marks
any joined file (virtual or a copy) with its parts and the parts' summed losses.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from sapiens2_cli.output.features import PartFile
from sapiens2_cli.output.hdf5.writer import encode, string_dtype, to_attr
from sapiens2_cli.output.rows import concat_columns

ROW_ALIGNED = ("features", "scales")  # what a virtual HDF5 join maps rather than copies


def features_layout(path: Path) -> tuple[tuple[int, ...], np.dtype, str | None]:
    """Row shape, dtype and compression of an HDF5 output's `features`."""
    with h5py.File(path, "r", locking=False) as f:
        features = f["features"]
        return features.shape[1:], features.dtype, features.compression


def write_virtual(
    sources: Sequence[PartFile], tmp: Path, out: Path, settings: dict, failed: dict[str, str]
) -> None:
    """`features` (and int8's `scales`) map each part's committed rows by a path relative to
    OUT's folder; the small per-row arrays are copied."""
    with h5py.File(tmp, "w") as f:
        for name in ROW_ALIGNED:
            layout = _virtual_layout(sources, out, name)
            if layout is not None:  # NaN (int8: 0) where a part cannot be opened, so a plain
                fill = np.nan if layout.dtype.kind == "f" else 0  # h5py reader sees no zeros
                f.create_virtual_dataset(name, layout, fillvalue=fill)
        _put_strings(f, "paths", [p for s in sources for p in s.file.paths])
        for name, values in _columns(sources).items():
            f[name] = values
        _put_strings(f, "failed_paths", list(failed))
        _put_strings(f, "failed_errors", list(failed.values()))
        for key, value in settings.items():
            f.attrs[key] = to_attr(value)
        f.attrs["rows"] = sum(len(s.file) for s in sources)
        f.attrs["failures"] = len(failed)


def record_join(path: Path, record: dict, reductions: dict) -> None:
    """Mark a joined file with its parts and join mode, and the parts' losses added up."""
    with h5py.File(path, "r+") as f:
        f.attrs["parts"] = np.array(record["parts"], dtype=h5py.string_dtype())
        f.attrs["merge"] = record["merge"]
        if reductions:
            f.attrs["reductions"] = json.dumps(reductions)


def _virtual_layout(sources: Sequence[PartFile], out: Path, name: str) -> h5py.VirtualLayout | None:
    """Row-aligned dataset `name` of every part, end to end; None if the parts lack it."""
    with h5py.File(sources[0].path, "r", locking=False) as f:
        if name not in f:
            return None
        row_shape, dtype = f[name].shape[1:], f[name].dtype
    layout = h5py.VirtualLayout((sum(len(s.file) for s in sources), *row_shape), dtype)
    start = 0
    for s in sources:
        n = len(s.file)
        if n:
            with h5py.File(s.path, "r", locking=False) as f:
                shape = f[name].shape  # may hold uncommitted rows past n
            source = h5py.VirtualSource(os.path.relpath(s.path, out.parent), name, shape)
            layout[start : start + n] = source[:n]
        start += n
    return layout


def _columns(sources: Sequence[PartFile]) -> dict[str, np.ndarray]:
    """Every part's columns, row-aligned; a part without one gives its fill value."""
    return concat_columns(
        [(len(s.file), {name: s.file.column(name) for name in s.file.columns}) for s in sources]
    )


def _put_strings(f: h5py.File, name: str, values: list[str]) -> None:
    """Fixed-width UTF-8, as the extract writer stores strings."""
    encoded = encode(values)
    width = max(map(len, encoded), default=0) or 1
    f[name] = np.array(encoded, dtype=string_dtype(width)).reshape(-1)
