"""Waiting for a running command to reach a moment, told by an event it leaves behind (a
row committed, a file appearing, a line on stderr), never by how long it has run; and
holding a run at a row (`Hold`), so that the moment is one the run cannot pass."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sapiens2_cli.output import open_features

#: Set in a subprocess's environment, Python writes one line on stderr as each import
#: ends ("import time: self | cumulative | name"): the moments of start-up, as events.
IMPORT_LINES = {"PYTHONPROFILEIMPORTTIME": "1"}


def committed_rows(out) -> int:
    """Rows a reader sees now (-1 while OUT is absent or mid-creation)."""
    try:
        with open_features(out) as f:
            return len(f)
    except Exception:
        return -1


def _wait(proc: subprocess.Popen, reached: Callable[[], bool], moment: str, timeout: float):
    deadline = time.monotonic() + timeout  # only against a hang: the moment is the event
    while not reached():
        assert proc.poll() is None, f"the run ended before {moment}{_said(proc)}"
        assert time.monotonic() < deadline, f"the run never reached {moment}"
        time.sleep(0.01)


def _said(proc: subprocess.Popen) -> str:
    """The end of what an ended process left on its stderr (if a pipe): why it ended. Read
    without blocking, since a child of it may hold the pipe open."""
    if proc.stderr is None or proc.stderr.closed:
        return ""
    chunks, fd = [], proc.stderr.fileno()
    while select.select([fd], [], [], 1)[0] and (chunk := os.read(fd, 1 << 16)):
        chunks.append(chunk)
    return ":\n" + b"".join(chunks).decode(errors="replace")[-3000:]


def wait_for_rows(proc: subprocess.Popen, out, rows: int, timeout: float = 120) -> None:
    """Wait until OUT holds `rows` committed rows, while `proc` still runs."""
    _wait(proc, lambda: committed_rows(out) >= rows, f"{rows} rows", timeout)


def wait_for_file(proc: subprocess.Popen, path, timeout: float = 120) -> None:
    """Wait until `path` exists, while `proc` still runs."""
    _wait(proc, lambda: os.path.lexists(path), f"{path} appeared", timeout)


def imported(name: str) -> Callable[[str], bool]:
    """A stderr line test: the import of module `name` has just ended (see IMPORT_LINES)."""
    return lambda line: line.startswith("import time:") and line.rsplit("|", 1)[-1].strip() == name


def wait_for_line(proc: subprocess.Popen, wanted: Callable[[str], bool]) -> list[str]:
    """Read `proc`'s stderr (a text pipe) up to the first line `wanted`; the lines read."""
    lines = []
    for line in proc.stderr:
        lines.append(line.rstrip("\n"))
        if wanted(lines[-1]):
            return lines
    raise AssertionError("the run ended without the line awaited:\n" + "\n".join(lines[-20:]))


#: The command line held at a row (see there).
HELD_RUN = Path(__file__).with_name("held_run.py")


@dataclass(frozen=True)
class Hold:
    """Where a command started with it (extract_helpers.start_subprocess) stops for good:
    once its extract has written `rows` rows (this run's, counted after each batch), it
    writes `marker` and waits for a signal, so it can neither end nor pass that row before
    the test kills or interrupts it. Under torchrun, only rank `rank` holds, if given.

    Rows written are rows handed to the writer thread: `wait_for_rows` after `wait` sees
    them committed, an event the held run cannot skip.
    """

    rows: int
    marker: Path
    rank: int | None = None

    def argv(self, *args: object) -> list[str]:
        """`sapiens2 ARGS`, held, as a script's arguments (for python or torchrun)."""
        rank = "all" if self.rank is None else str(self.rank)
        return [str(HELD_RUN), str(self.rows), str(self.marker), rank, *map(str, args)]

    def command(self, *args: object) -> list[str]:
        """The command line of `sapiens2 ARGS`, held."""
        return [sys.executable, *self.argv(*args)]

    def wait(self, proc: subprocess.Popen, timeout: float = 120) -> int:
        """Wait until `proc` holds; the rows its extract had written then (`rows` or, with
        batches of several rows, a few more)."""
        _wait(proc, self.marker.exists, f"its hold at {self.rows} rows", timeout)
        return int(self.marker.read_text())
