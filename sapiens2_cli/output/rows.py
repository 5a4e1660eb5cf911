"""What the output format fixes about rows, for writers and readers alike: its version, the
record a writer is given (`RowBatch`), which names a per-row column may take, and the fill
value a column holds on rows written without it (docs/format.md)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

#: The format's version (docs/format.md): readers refuse outputs of any other.
FORMAT_VERSION = 1
#: Names a per-row column cannot take: the other datasets (HDF5) / shard files (npy).
RESERVED = frozenset(
    {"features", "scales", "paths", "failed_paths", "failed_errors", "index", "rows"}
)
COLUMN_NAME = re.compile(r"[a-z][a-z0-9_]*")


@dataclass
class RowBatch:
    """One batch on its way to disk: rows for the items that worked, reasons for the rest."""

    keys: list[str]  # stored in `paths`; may hold surrogate escapes (os.fsdecode)
    features: np.ndarray | None  # (k, n_layers, ...) in the storage dtype; None if k == 0
    columns: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (k, *shape)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (key, one-line reason)
    scales: np.ndarray | None = None  # int8 only: (k, *scale_shape) float16, stored
    errors: np.ndarray | None = None  # int8 only: each token's relative error, counted
    energy: np.ndarray | None = None  # --project only: (k, 2) per-row energies, counted

    def __len__(self) -> int:
        return len(self.keys)


def fill_value(dtype: np.dtype) -> float:
    """What a column holds for rows that did not carry it: NaN (floats), -1 (integers)."""
    kind = np.dtype(dtype).kind
    if kind == "f":
        return np.nan
    if kind == "i":
        return -1
    raise TypeError(f"a column must be float or signed integer, not {np.dtype(dtype)}")


def filled(rows: int, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A column's values for `rows` rows that did not carry it."""
    return np.full((rows, *shape), fill_value(dtype), dtype)


def concat_columns(runs: Sequence[tuple[int, Mapping[str, np.ndarray]]]) -> dict[str, np.ndarray]:
    """Columns of consecutive runs of rows, each given as (rows, {name: (rows, *shape)}),
    joined per name; a run without a column that others have (photos beside video frames,
    an npy shard whose batches had no boxes) gets the fill value."""
    joined = {}
    for name in dict.fromkeys(name for _, columns in runs for name in columns):
        like = next(np.asarray(columns[name]) for _, columns in runs if name in columns)
        joined[name] = np.concatenate(
            [
                columns[name] if name in columns else filled(rows, like.shape[1:], like.dtype)
                for rows, columns in runs
            ]
        )
    return joined


def check_columns(batch: RowBatch) -> None:
    """Columns are named like datasets, row-aligned, and have a fill value."""
    for name, data in batch.columns.items():
        if not COLUMN_NAME.fullmatch(name) or name in RESERVED:
            raise ValueError(f"{name!r} cannot name a column")
        if data.shape[:1] != (len(batch),):
            raise ValueError(f"column {name} has {data.shape[:1]} rows, the batch {len(batch)}")
        fill_value(data.dtype)
