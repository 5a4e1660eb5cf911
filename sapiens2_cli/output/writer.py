"""What both writers share (`FeatureWriter`): appending a batch of rows and its failure
records, keeping the failure log (docs/format.md), a full disk's one line, and closing.

A writer owns one output path and appends batches of rows to it, making each batch (HDF5)
or each shard file (npy) durable before it counts as done. Resume, `--shard I/N` parts and
a later `merge` all build on it: a writer is told its path, never guesses one. (Whether an
existing output may be resumed is engine/resume.py's.)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

from sapiens2_cli.output.disk import OutputFull, disk_full, is_no_room, one_line_if_full
from sapiens2_cli.output.lock import OutputLock
from sapiens2_cli.output.rows import RowBatch, check_columns


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
