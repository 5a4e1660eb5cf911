"""File helpers every layer uses: a file's content hash, and what tells a file from one
written over it since."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from sapiens2_cli.remote import is_url, open_input


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes (a checkpoint, a box file), read in 16 MiB pieces."""
    digest = hashlib.sha256()
    with open_input(str(path)) if is_url(str(path)) else open(path, "rb") as f:
        while chunk := f.read(16 * 2**20):
            digest.update(chunk)
    return digest.hexdigest()


def file_state(path: str) -> tuple:
    """What tells a file, opened by this process, from one written over it since (for a
    URL, its name: stat-ing an object is a request, and objects are replaced, not edited)."""
    if is_url(path):
        return os.getpid(), path
    st = os.stat(path)
    return os.getpid(), path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns
