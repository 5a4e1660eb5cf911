"""Files made whole or not at all: built under a temporary name, removed if building fails,
renamed into place once fsynced, and the rename itself made durable (`fsync_dir`)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from sapiens2_cli.output.disk import one_line_if_full


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
