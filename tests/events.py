"""Waiting for a running command to reach a moment, told by an event it leaves behind (a
row committed, a file appearing, a line on stderr), never by how long it has run."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable

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
        assert proc.poll() is None, f"the run ended before {moment}"
        assert time.monotonic() < deadline, f"the run never reached {moment}"
        time.sleep(0.01)


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
