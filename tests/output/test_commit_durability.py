"""The order of an npy commit's steps on disk, and what counts as a full disk: a kill or a
power cut leaves a shard whole or absent, and a full disk is always the one line."""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest

from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.output.disk import one_line_if_full
from sapiens2_cli.output.npy import shard_file
from sapiens2_cli.output.npy.shard_file import ShardFile, write_atomic


def test_an_npy_shard_is_fsynced_before_it_is_renamed_into_place(tmp_path, monkeypatch):
    steps = []
    fsync, replace = os.fsync, os.replace

    def fsync_seen(fd):
        steps.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        fsync(fd)

    def replace_seen(src, dst):
        steps.append(("replace", str(src)))
        replace(src, dst)

    monkeypatch.setattr(shard_file.os, "fsync", fsync_seen)
    monkeypatch.setattr(shard_file.os, "replace", replace_seen)
    shard = ShardFile(tmp_path / "shard-00000.features.npy", np.float16, (3, 4))
    shard.append(np.ones((2, 3, 4), np.float16))
    shard.finish()
    tmp = str(tmp_path / "shard-00000.features.npy.tmp")
    assert steps.index(("fsync", tmp)) < steps.index(("replace", tmp)), steps
    np.testing.assert_array_equal(np.load(tmp_path / "shard-00000.features.npy"), 1)


def test_room_for_a_side_file_is_reserved_before_it_is_written(tmp_path, monkeypatch):
    # numpy reports a full disk as a short write with no errno: only the reservation
    # (ENOSPC) gives the one-line disk-full message.
    reserved = []
    allocate = os.posix_fallocate

    def allocate_seen(fd, offset, length):
        reserved.append((os.fstat(fd).st_size, offset, length))
        allocate(fd, offset, length)

    monkeypatch.setattr(shard_file.os, "posix_fallocate", allocate_seen)
    array = np.arange(1000, dtype=np.int64)
    write_atomic(tmp_path / "shard-00000.paths.npy", array)
    size = (tmp_path / "shard-00000.paths.npy").stat().st_size
    assert reserved == [(0, 0, size)]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EFBIG])
def test_a_quota_or_a_file_size_limit_is_a_full_disk(tmp_path, code):
    full = pytest.raises(Sapiens2Error, match="the disk is full")
    with full as refused, one_line_if_full(tmp_path / "f.h5"):
        raise OSError(code, os.strerror(code))
    assert "\n" not in str(refused.value)
