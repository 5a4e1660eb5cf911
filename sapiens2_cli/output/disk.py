"""A full disk: telling a write refused for want of room from other failures, and the one
line a run stops with then (how much is free, and that what was committed is kept)."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from sapiens2_cli.errors import Sapiens2Error

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
