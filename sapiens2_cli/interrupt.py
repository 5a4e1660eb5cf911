"""Leaving on Ctrl-C: one line on stderr and exit status 130, from any moment."""

from __future__ import annotations

import atexit
import os
import sys
from typing import NoReturn


def exit_interrupted() -> NoReturn:
    """Say so and exit 130.

    Not sys.exit: when a KeyboardInterrupt escaped any nested evaluation during start-up
    (an import, even one whose interrupt was caught later), CPython ends the process by
    re-raising SIGINT (status -2) instead. The atexit handlers still run (multiprocessing
    stops its workers there); then os._exit keeps the status.
    """
    print("interrupted", file=sys.stderr)
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)
