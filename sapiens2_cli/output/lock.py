"""One writer per output: the lock file beside OUT (`OUT.lock`) and the lock on it."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import ClassVar

from sapiens2_cli.errors import Sapiens2Error


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
