"""`sapiens2 ARGS` as `python -m sapiens2_cli` runs it, but held for good once its extract
has written a number of rows, so that a test's kill or Ctrl-C lands at that row: the run
cannot end first, whatever the machine's speed (tests/events.py, `Hold`).

The hold is a progress function of the public API (`sapiens2_cli.extract(...,
progress=...)`), which the engine calls on its main thread after each batch has gone to the
writer thread: the command line's call of that function is given one.

    python held_run.py ROWS MARKER RANK ARGS...   (RANK: the torchrun rank held, or "all")
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

from sapiens2_cli.interrupt import exit_on_ctrl_c_in_imports

exit_on_ctrl_c_in_imports()  # first, as `python -m sapiens2_cli` does

from sapiens2_cli.scaleout import launch  # noqa: E402  (imports no torch)


def holding(rows: int, marker: Path):
    """A progress function that counts this run's rows and, once there are `rows`, writes
    the count to `marker` (whole, by a rename) and waits until a signal ends the process."""
    written = 0

    def progress(step) -> None:
        nonlocal written
        written += step.rows
        if written >= rows:
            partial = marker.with_name(marker.name + ".partial")
            partial.write_text(str(written))
            os.replace(partial, marker)
            threading.Event().wait()  # no timeout: a signal's handler raises here

    return progress


def hold_extract(rows: int, marker: Path, rank: str) -> None:
    """Give the extract of this process a holding progress function; under torchrun, the
    other ranks than `rank` (unless it is "all") one that does nothing, so that every rank
    counts progress the same way (a bar over all ranks needs a collective that a function
    does not)."""
    held = rank in ("all", os.environ.get("RANK"))
    run = launch.extract
    hold = holding(rows, marker) if held else lambda step: None

    def extract(*args, progress=False, **kwargs):
        assert progress is False, "a held run needs -q: the hold is its progress function"
        return run(*args, progress=hold, **kwargs)

    launch.extract = extract


if __name__ == "__main__":
    rows, marker, rank = sys.argv[1:4]
    del sys.argv[1:4]  # the command line reads the rest
    hold_extract(int(rows), Path(marker), rank)
    from sapiens2_cli.cli import main

    main()
