"""Writing on a background thread, so the device computes the next batch while the disk
takes the last one."""

from __future__ import annotations

import logging
import queue
import threading
import time

from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.output import FeatureWriter, RowBatch
from sapiens2_cli.text import one_line

log = logging.getLogger(__name__)


class BackgroundWriter:
    """Feeds a FeatureWriter from a bounded queue on one thread.

    A write error (a full disk, most often) stops the writing; the next `put` or `close`
    raises it as a Sapiens2Error. What was committed before stays readable.
    """

    def __init__(self, writer: FeatureWriter, depth: int = 2) -> None:
        self.writer = writer
        self._queue: queue.Queue[RowBatch | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self.busy_s = 0.0  # seconds spent in writer.write, for the stage profile
        self._thread = threading.Thread(target=self._run, name="sapiens2-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (batch := self._queue.get()) is not None:
            if self._error is None:
                start = time.perf_counter()
                try:
                    self.writer.write(batch)
                except BaseException as e:  # reported to the main thread, never lost
                    self._error = e
                self.busy_s += time.perf_counter() - start

    def put(self, batch: RowBatch) -> None:
        self._raise()
        self._queue.put(batch)

    def close(self, complete: bool) -> None:
        """Write what is queued, then close the output (marking it complete or not)."""
        self._queue.put(None)
        self._thread.join()
        if self._error is None:
            try:
                self.writer.close(complete)
            except BaseException as e:
                self._error = e
        else:
            try:
                self.writer.close(False)
            except Exception as e:  # the first error is the one worth reporting
                log.debug("closing %s after a write error: %s", self.writer.path, e)
        self._raise()

    def _raise(self) -> None:
        if self._error is None:
            return
        error = self._error
        if isinstance(error, Sapiens2Error):
            raise error
        raise Sapiens2Error(
            f"writing {self.writer.path} failed ({one_line(error)}): if the disk is full, free "
            "space and rerun the same command to resume; rows written so far are kept"
        ) from error
