"""What both writers share: the rows they append, failure bookkeeping, the per-row columns'
fill rule, the disk-full line, building a file under a temporary name, and the
one-writer-per-output lock. (Whether an existing output may be resumed is engine/resume.py's.)

A writer owns one output path and appends batches of rows to it, making each batch (HDF5)
or each shard (npy) durable before it counts as done. Resume, `--shard I/N` parts and a
later `merge` all build on these pieces: a writer is told its path, never guesses one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from sapiens2_cli.errors import Sapiens2Error

FORMAT_VERSION = 1
#: Names a per-row column cannot take: the other datasets (HDF5) / shard files (npy).
RESERVED = frozenset(
    {"features", "scales", "paths", "failed_paths", "failed_errors", "index", "rows"}
)
COLUMN_NAME = re.compile(r"[a-z][a-z0-9_]*")


#: What a write refused for want of room fails with: a full disk, a quota, a file size limit.
NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class OutputFull(OSError):
    """No room for the next write, found before any of it was made: the output is as the
    last commit left it and can still be closed normally."""


def is_no_room(error: BaseException) -> bool:
    """Whether `error` is a write refused for want of room."""
    return isinstance(error, OSError) and error.errno in NO_ROOM


def nearest_folder(path: Path) -> Path:
    """`path` if it is a folder, else its nearest existing parent folder."""
    return next((p for p in (path, *path.parents) if p.is_dir()), Path("."))


def disk_full(path: Path, error: OSError) -> Sapiens2Error:
    """The one line for a write to `path` refused for want of room: says so, and how much
    is free where `path` lives, since the OSError's own text may not (numpy's short write)."""
    free = shutil.disk_usage(nearest_folder(path)).free / 2**20
    return Sapiens2Error(
        f"writing {path} failed: the disk is full ({os.strerror(error.errno)}; {free:.1f} MiB "
        "free there): free space and run the same command again; what was written before is "
        "kept"
    )


@contextlib.contextmanager
def one_line_if_full(path: Path) -> Iterator[None]:
    """A write to `path` refused for want of room leaves as `disk_full`'s one line."""
    try:
        yield
    except OSError as e:
        if is_no_room(e):
            raise disk_full(path, e) from e
        raise


@contextlib.contextmanager
def removed_on_failure(tmp: Path) -> Iterator[None]:
    """Delete `tmp`, a file being made under a temporary name, if making it fails: nothing
    half-made is left behind."""
    try:
        yield
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def built_in_place(path: Path, suffix: str) -> Iterator[Path]:
    """Yield a temporary name beside `path` to build a file under; once built it is fsynced
    and renamed over `path`. If building fails (a full disk: one line) the temporary file
    goes and `path` is as it was, so `path` is never a half-made file; a temporary file left
    by a killed build is replaced."""
    tmp = path.with_name(path.name + suffix)
    tmp.unlink(missing_ok=True)
    with one_line_if_full(path), removed_on_failure(tmp):
        yield tmp
        with open(tmp, "rb+") as raw:
            os.fsync(raw.fileno())
        os.replace(tmp, path)
    fsync_dir(path.parent)


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
    a shard written before boxes came) gets the fill value."""
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


def lock_path(out: Path) -> Path:
    """The lock file of output `out`: `OUT.lock` beside it, for both formats."""
    return out.with_name(out.name + ".lock")


def _identity(path: Path) -> tuple[int, int] | None:
    """(st_dev, st_ino) of the file at `path`, None if there is none."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.st_dev, stat.st_ino


class OutputLock:
    """One writer per output: an exclusive POSIX lock (`lockf`) on `OUT.lock`, beside OUT
    (OUT with every symbolic link resolved, so every name of one output has one lock).

    Why a separate file: a POSIX lock belongs to the process and is dropped the moment the
    process closes *any* descriptor of the locked file, and h5py (or a reader) opens and
    closes OUT itself. Nothing but this class opens `OUT.lock`. Why not `flock`: decode
    workers forked later would inherit it and keep OUT locked after a kill -9, while a
    POSIX lock goes with its process however it ends. POSIX locks never conflict within one
    process, so this process's own locks are also kept in `_held`.

    The holder deletes the file before it lets go; whoever then locks a file that is no
    longer at the path (deleted, or replaced, in between) lets go and tries again, so two
    processes can never both hold "the" lock. A file left by a killed run is simply reused.
    """

    _held: ClassVar[set[tuple[int, int]]] = set()  # (st_dev, st_ino) of lock files held here

    def __init__(self, out: Path) -> None:
        self.path = lock_path(out.resolve())  # by the file: a link to OUT shares its lock
        busy = Sapiens2Error(
            f"{out} is being written by another run: wait for it to end or choose another -o"
        )
        for _ in range(100):
            if _identity(self.path) in self._held:  # checked before opening: closing our
                raise busy  # own descriptor of a file held here would drop its lock
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            stat = os.fstat(fd)
            ident = (stat.st_dev, stat.st_ino)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise busy from None
            if _identity(self.path) == ident:
                self._fd, self._ident = fd, ident
                self._held.add(ident)
                return
            os.close(fd)  # the holder deleted it as we opened it: try the new one
        raise Sapiens2Error(f"cannot lock {self.path}: it keeps changing; choose another -o")

    def release(self) -> None:
        """Delete the lock file (while still holding it, and only if it is still ours: someone
        may have deleted it by hand and another run locked a new one), then let go."""
        if self._fd < 0:
            return
        if _identity(self.path) == self._ident:
            self.path.unlink()
        self._held.discard(self._ident)
        os.close(self._fd)
        self._fd = -1


class FeatureWriter(ABC):
    """Appends rows and failure records to one output; `close` marks the run complete or not.

    `failed` maps key -> reason for every item that failed and has not since succeeded;
    it starts from the existing output when resuming, so earlier failures are kept. On
    disk failures are an append-only log (docs/format.md): `_log` holds records not yet
    written, a cleared failure is logged as a tombstone (empty reason), and the last
    record of a key is its word. `_stale` says the log holds superseded records, which
    `close` compacts away. `reductions` is the output's record of them (reduce/losses.py),
    committed with the rows whose loss it counts.
    """

    def __init__(
        self,
        path: Path,
        failed: dict[str, str],
        lock: OutputLock | None,
        stale: bool,
        reductions: dict | None = None,
    ) -> None:
        self.path = path
        self.reductions = dict(reductions or {})
        self.failed = dict(failed)
        self.broken = False  # a write failed: nothing more is written (see close)
        self._lock = lock  # released at close; None when the caller holds OUT's lock
        self._log: list[tuple[str, str]] = []
        self._stale = stale

    def write(self, batch: RowBatch) -> None:
        """Append `batch`: its rows, and its failures (a key that now worked is cleared)."""
        check_columns(batch)
        for key in batch.keys:
            if self.failed.pop(key, None) is not None:
                self._log.append((key, ""))
                self._stale = True
        for key, reason in batch.failures:
            reason = reason or "failed"  # an empty reason is a tombstone on disk
            if self.failed.get(key) == reason:
                continue  # its last record says so already: a rerun adds nothing to the log
            self._stale |= key in self.failed
            self.failed[key] = reason
            self._log.append((key, reason))
        try:
            self._append(batch)
        except OutputFull as e:
            raise disk_full(self.path, e) from e
        except BaseException as e:
            self.broken = True
            if is_no_room(e):
                raise disk_full(self.path, e) from e
            raise

    def close(self, complete: bool) -> None:
        """Make everything written so far durable and record whether the run is complete.

        After a failed write this writes nothing: the library may hold half-written state,
        and the last commit on disk is what a rerun resumes from. The lock goes either way.
        """
        try:
            if not self.broken:
                with one_line_if_full(self.path):
                    self._close(complete)
        finally:
            if self._lock is not None:
                self._lock.release()

    @property
    @abstractmethod
    def rows(self) -> int:
        """Rows already durable on disk."""

    @abstractmethod
    def _append(self, batch: RowBatch) -> None: ...

    @abstractmethod
    def _close(self, complete: bool) -> None: ...
