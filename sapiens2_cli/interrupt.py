"""Ctrl-C from any moment: one line on stderr and exit status 130."""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from types import FrameType
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


def exit_on_ctrl_c_in_imports() -> None:
    """Make Ctrl-C during an import exit at once; elsewhere it stays a KeyboardInterrupt.

    A KeyboardInterrupt raised inside an import can leave a C extension half-loaded (numpy
    then fails with "cannot load module more than once per process", under torch's
    import) or be swallowed by the module being imported. Nothing needs cleaning up while
    a command is still importing what it needs. Left alone where SIGINT is ignored.
    """
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_ctrl_c)


def _on_ctrl_c(signum: int, frame: FrameType | None) -> None:
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            exit_interrupted()
        frame = frame.f_back
    raise KeyboardInterrupt


@contextlib.contextmanager
def ctrl_c_deferred() -> Iterator[None]:
    """Hold a Ctrl-C until the block is done, then deliver it. For set-up that must not be
    cut in half: a logging handler interrupted while it is built is already registered
    without its stream, and logging's shutdown (at exit, `exit_interrupted` too) then
    fails on it with a traceback."""
    if not hasattr(signal, "pthread_sigmask"):  # Windows: no signal masks
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
