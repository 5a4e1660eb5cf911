"""What both writers share: the rows they append, failure bookkeeping, the settings check.

A writer owns one output path and appends batches of rows to it, making each batch (HDF5)
or each shard (npy) durable before it counts as done. Resume, `--shard I/N` parts and a
later `merge` all build on these pieces: a writer is told its path, never guesses one.
"""

from __future__ import annotations

import fcntl
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sapiens2_cli.errors import Sapiens2Error

FORMAT_VERSION = 1
LOCK_NAME = "sapiens2.lock"  # inside an npy output folder


class OutputFull(OSError):
    """No room for the next write, found before any of it was made: the output is as the
    last commit left it and can still be closed normally."""


@dataclass
class RowBatch:
    """One batch on its way to disk: rows for the items that worked, reasons for the rest."""

    keys: list[str]  # stored in `paths`
    features: np.ndarray | None  # (k, n_layers, ...) in the storage dtype; None when k == 0
    columns: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (k, ...) per row
    failures: list[tuple[str, str]] = field(default_factory=list)  # (key, one-line reason)

    def __len__(self) -> int:
        return len(self.keys)


def fill_value(dtype: np.dtype) -> float | int:
    """What a column holds for a row that lacks it: NaN for floats, -1 for integers."""
    return np.nan if np.dtype(dtype).kind == "f" else -1


def concat_columns(parts: Sequence[tuple[int, Mapping[str, np.ndarray]]]) -> dict[str, np.ndarray]:
    """Columns of consecutive runs of rows, each given as (rows, {name: (rows, ...)}), joined
    per name; a run without a column that others have (photos beside video frames, a
    shard written before boxes came) gets the fill value."""
    examples: dict[str, np.ndarray] = {}
    for _, columns in parts:
        for name, data in columns.items():
            examples.setdefault(name, np.asarray(data))
    joined = {}
    for name, ex in examples.items():
        blank = np.full(ex.shape[1:], fill_value(ex.dtype), ex.dtype)
        joined[name] = np.concatenate(
            [
                np.asarray(columns[name], ex.dtype)
                if name in columns
                else np.broadcast_to(blank, (rows, *blank.shape))
                for rows, columns in parts
            ]
        )
    return joined


def fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def lock_file(path: Path) -> int:
    """An open descriptor holding an exclusive POSIX lock on `path`, so one writer at a time
    appends to an output. The lock belongs to this process only (decode workers forked
    later do not inherit it) and goes when the process does, however it ends."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        owner = path.parent if path.name == LOCK_NAME else path
        raise Sapiens2Error(
            f"{owner} is being written by another process: wait for it or choose another -o"
        ) from None
    return fd


class FeatureWriter(ABC):
    """Appends rows and failure records to one output; `close` marks the run complete or not.

    `failed` maps path -> reason for every image that failed and has not since succeeded;
    it starts from the existing output when resuming, so earlier failures are kept.
    """

    def __init__(self, path: Path, failed: dict[str, str]) -> None:
        self.path = path
        self.failed = dict(failed)
        self.broken = False  # a write failed: nothing more is written (see close)

    def write(self, batch: RowBatch) -> None:
        """Append `batch`: its rows, and its failures (a path that now worked is cleared)."""
        for key in batch.keys:
            self.failed.pop(key, None)
        self.failed.update(batch.failures)
        try:
            self._append(batch)
        except OutputFull:
            raise
        except BaseException:
            self.broken = True
            raise

    def close(self, complete: bool) -> None:
        """Make everything written so far durable and record whether the run is complete.

        After a failed write this does nothing: the library may hold half-written state,
        and the last commit on disk is what a rerun resumes from.
        """
        if not self.broken:
            self._close(complete)

    @property
    @abstractmethod
    def rows(self) -> int:
        """Rows already durable on disk."""

    @abstractmethod
    def _append(self, batch: RowBatch) -> None: ...

    @abstractmethod
    def _close(self, complete: bool) -> None: ...
