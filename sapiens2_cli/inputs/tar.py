"""Tar shards (the WebDataset layout) -> image members, read in place: no extraction, no index.

`scan` reads the headers in stored order (tarfile seeks over member data, so a shard costs
one 512-byte read per member) and lists the image members with where their bytes lie;
`read_members` reads a run of members' bytes, with one open file, for the decoder.
Keys are `SHARD/MEMBER` (`/data/00003.tar/000030017.jpg`; as a file's key: '#' doubled);
`member_of` splits one back.

A gzip, bzip2 or xz compressed tar is read as the stream of its decompressed bytes, so
the offsets are offsets in that stream. It has no random access: reaching a member means
decompressing everything before it, so the last tar a process read is kept open where it
stopped, and a process reading runs of members in order decompresses the file once.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import itertools
import lzma
import os
import tarfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from sapiens2_cli.files import file_state
from sapiens2_cli.inputs.decode import ImageError
from sapiens2_cli.inputs.items import (
    Failure,
    Item,
    Preprocess,
    Reader,
    Row,
    bytes_row,
    file_key,
)
from sapiens2_cli.inputs.sources import IMAGE_EXTENSIONS, Expansion, Source
from sapiens2_cli.remote import is_url, open_input, read_bytes
from sapiens2_cli.text import one_line, open_failure


@dataclass(frozen=True)
class Member:
    name: str  # as stored (non-UTF-8 bytes kept as surrogate escapes)
    offset: int  # where its data starts in the tar (decompressed, for a compressed one)
    size: int  # bytes


@dataclass(frozen=True)
class Scan:
    members: list[Member]  # image members, in stored order
    skipped: int  # other members: non-image files (.json, .txt, .cls, ...), links, repeats
    damage: str | None  # why reading stopped before the end of the archive, or None


#: A compressed tar's first bytes and what decompresses it (what `tar` and tarfile's
#: "r:*" recognise); the extension does not decide, so a gzipped `.tar` reads too.
_COMPRESSED = {b"\x1f\x8b": gzip.open, b"BZh": bz2.open, b"\xfd7zXZ\x00": lzma.open}
#: The same, as fsspec names the decompressors (for URLs).
_COMPRESSED_NAMES = dict(zip(_COMPRESSED, ("gzip", "bz2", "xz"), strict=True))

#: What reading a tar can raise: the file's errors, a compressed stream cut short or corrupt
#: (EOFError, zlib / lzma errors), the headers' (TarError).
_READ_ERRORS = (OSError, EOFError, zlib.error, lzma.LZMAError, tarfile.TarError)


def open_tar(tar_path: str) -> BinaryIO:
    """The tar's bytes: the file, or a gzip, bzip2 or xz one decompressed as it is read
    (seeking forward decompresses up to there; back, starts again from the first byte).
    A URL's object is streamed (remote.open_input)."""
    if is_url(tar_path):
        head = read_bytes(tar_path, 0, 6)
        name = next((n for m, n in _COMPRESSED_NAMES.items() if head.startswith(m)), None)
        return open_input(tar_path, name)
    with open(tar_path, "rb") as f:
        head = f.read(6)
    opener = next((o for m, o in _COMPRESSED.items() if head.startswith(m)), open)
    return opener(tar_path, "rb")


def scan(tar_path: str) -> Scan:
    """List the image members of a tar (plain or compressed) in stored order.

    A damaged tar (truncated, bad header) keeps the members before the damage and says why
    in `damage`. Raises ImageError if the file is not a readable tar at all.
    """
    members: list[Member] = []
    seen: set[str] = set()
    skipped = 0
    damage = None
    try:
        with open_tar(tar_path) as data, tarfile.open(fileobj=data, mode="r:") as archive:
            while True:
                try:
                    info = archive.next()
                    if info is None:
                        damage = _end_damage(data, archive.offset)
                        break
                    if info.isdir():
                        continue
                    if not _holds(data, info.offset_data + info.size):
                        damage = f"member {info.name} is cut off"
                        break
                except _READ_ERRORS as e:
                    damage = f"truncated or corrupt ({one_line(e)})"
                    break
                if _is_image(info) and info.name not in seen:
                    seen.add(info.name)
                    members.append(Member(info.name, info.offset_data, info.size))
                else:
                    skipped += 1
    except (FileNotFoundError, IsADirectoryError, PermissionError) as e:
        raise ImageError(open_failure(e, "a tar file")) from None
    except (tarfile.ReadError, EOFError, zlib.error, lzma.LZMAError) as e:
        if not _starts_like_tar(tar_path):
            raise ImageError(f"not a tar file (plain, gzip, bzip2 or xz): {one_line(e)}") from None
        damage = one_line(e)  # its first member is already cut off
    except OSError as e:
        raise ImageError(f"cannot read tar file: {one_line(e)}") from None
    if damage:
        damage = f"tar damaged after {len(members)} image members: {damage}"
    return Scan(members, skipped, damage)


def read_members(tar_path: str, members: Sequence[Member]) -> Iterator[bytes | str]:
    """Each member's bytes, or a one-line reason; one open file for the whole run of them."""
    done = 0
    try:
        with _kept_open(tar_path) as f:
            for member in members:
                f.seek(member.offset)
                data = f.read(member.size)
                done += 1
                if len(data) == member.size:
                    yield data
                else:
                    yield f"member cut off: {len(data)} of {member.size} bytes in the tar"
    except _READ_ERRORS as e:
        yield from itertools.repeat(f"cannot read tar file: {one_line(e)}", len(members) - done)


def member_of(path: str) -> tuple[str, str] | None:
    """(tar file, member name) when `path` (a key's, `items.split_key`) names a tar member:
    the first prefix that is a file on disk is the tar. None for a file or a missing path."""
    cut = path.find("/", 1)
    while cut != -1:
        if os.path.isfile(path[:cut]):
            return path[:cut], path[cut + 1 :]
        cut = path.find("/", cut + 1)
    return None


#: The tar this process read last, open where that read stopped, by file_state (one entry).
_last: dict[tuple, BinaryIO] = {}


@contextlib.contextmanager
def _kept_open(tar_path: str) -> Iterator[BinaryIO]:
    """`open_tar`, reusing and then keeping the last tar read in this process.

    A decode worker gets a shard's runs of members in order, so a compressed shard keeps
    decompressing from where the previous run stopped instead of from its first byte each
    time. Replaced, or failing, the file is opened afresh, and so is one kept by the process
    a decode worker was forked from (its file offset is shared with every other fork).
    """
    key = file_state(tar_path)
    f = _last.pop(key, None)
    for other in _last.values():
        other.close()
    _last.clear()
    f = f or open_tar(tar_path)
    try:
        yield f
    except BaseException:
        f.close()
        raise
    _last[key] = f


def _is_image(info: tarfile.TarInfo) -> bool:
    ext = os.path.splitext(info.name)[1].lower()
    return info.isreg() and not info.issparse() and ext in IMAGE_EXTENSIONS


def _starts_like_tar(tar_path: str) -> bool:
    """A ustar/GNU/pax header's magic at byte 257 of the first block (decompressed)."""
    try:
        with open_tar(tar_path) as f:
            return f.read(tarfile.BLOCKSIZE)[257:262] == b"ustar"
    except _READ_ERRORS:
        return False


def _holds(data: BinaryIO, end: int) -> bool:
    """Whether the tar's bytes reach `end` (a compressed tar's size is not known ahead)."""
    if end == 0:
        return True
    data.seek(end - 1)
    return bool(data.read(1))


def _end_damage(data: BinaryIO, offset: int) -> str | None:
    """Why the headers stopped at `offset`, unless it is the end-of-archive zero block."""
    data.seek(offset)
    block = data.read(tarfile.BLOCKSIZE)
    if not block:
        return "the file ends without the end-of-archive block (truncated?)"
    if len(block) < tarfile.BLOCKSIZE:
        return "the file ends inside a header (truncated)"
    if block.count(0) != tarfile.BLOCKSIZE:
        return f"invalid header at byte {offset}"
    return None


@dataclass(frozen=True)
class TarReader(Reader):
    """Reads and decodes a run of a tar file's image members with one open file."""

    #: Members per decode call at most (the loader also caps it at the batch size).
    chunk_rows = 64

    def read(self, items: Sequence[Item], prep: Preprocess) -> Iterator[Row | Failure]:
        members = read_members(items[0].file, [item.locator for item in items])
        for item, data in zip(items, members, strict=True):
            yield bytes_row(item, data, prep)


class TarSource(Source):
    """Each tar file (plain or compressed) gives its image members, keyed SHARD/MEMBER."""

    extensions = frozenset(
        {".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tbz", ".tar.xz", ".txz"}
    )

    def expand(self, files: Sequence[str]) -> Expansion:
        reader, out = TarReader(), Expansion()
        for file in files:
            try:
                found = scan(file)
            except ImageError as e:
                out.failures.append(Failure(file_key(file), str(e)))
                continue
            for m in found.members:
                out.items.append(Item(file_key(f"{file}/{m.name}"), file, reader, m))
            out.ignored += found.skipped
            if found.damage:
                out.failures.append(Failure(file_key(file), found.damage))
        return out
