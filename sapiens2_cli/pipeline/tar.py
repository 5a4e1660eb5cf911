"""Tar shards (the WebDataset layout) -> image members, read in place: no extraction, no index.

`scan` reads the headers in stored order (tarfile seeks over member data, so a shard costs
one 512-byte read per member) and lists the image members with where their bytes lie;
`read_members` reads a run of members' bytes, with one open file, for the decoder.
Keys are `SHARD.tar/MEMBER` (as a file's key: '#' doubled); `member_of` splits one back.
Only uncompressed tars: a compressed one would have to be decompressed from its start to
reach each member.
"""

from __future__ import annotations

import itertools
import os
import re
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.pipeline.decode import ImageError, decode_image
from sapiens2_cli.pipeline.items import (
    Failure,
    Item,
    Preprocess,
    Reader,
    Row,
    file_key,
    image_columns,
)
from sapiens2_cli.pipeline.sources import IMAGE_EXTENSIONS, Expansion, Source
from sapiens2_cli.text import one_line


@dataclass(frozen=True)
class Member:
    name: str  # as stored (non-UTF-8 bytes kept as surrogate escapes)
    offset: int  # where its data starts in the tar file
    size: int  # bytes


@dataclass(frozen=True)
class Scan:
    members: list[Member]  # image members, in stored order
    skipped: int  # other members: non-image files (.json, .txt, .cls, ...), links, repeats
    damage: str | None  # why reading stopped before the end of the archive, or None


def scan(tar_path: str) -> Scan:
    """List the image members of an uncompressed tar in stored order.

    A damaged tar (truncated, bad header) keeps the members before the damage and says why
    in `damage`. Raises ImageError if the file is not a readable tar at all.
    """
    members: list[Member] = []
    seen: set[str] = set()
    skipped = 0
    damage = None
    try:
        size = os.path.getsize(tar_path)
        with tarfile.open(tar_path, "r:") as archive:
            while True:
                try:
                    info = archive.next()
                except tarfile.TarError as e:
                    damage = f"truncated or corrupt ({one_line(e)})"
                    break
                if info is None:
                    damage = _end_damage(tar_path, archive.offset, size)
                    break
                if info.isdir():
                    continue
                if info.offset_data + info.size > size:
                    damage = f"member {info.name} is cut off ({size - info.offset_data} bytes)"
                    break
                if _is_image(info) and info.name not in seen:
                    seen.add(info.name)
                    members.append(Member(info.name, info.offset_data, info.size))
                else:
                    skipped += 1
    except tarfile.ReadError as e:
        if not _starts_like_tar(tar_path):
            raise ImageError(f"not an uncompressed tar file: {one_line(e)}") from None
        damage = one_line(e)  # its first member is already cut off
    except FileNotFoundError:
        raise ImageError("file not found") from None
    except IsADirectoryError:
        raise ImageError("is a folder, not a tar file") from None
    except OSError as e:
        raise ImageError(f"cannot read tar file: {one_line(e)}") from None
    if damage:
        damage = f"tar damaged after {len(members)} image members: {damage}"
    return Scan(members, skipped, damage)


def read_members(tar_path: str, members: Sequence[Member]) -> Iterator[bytes | str]:
    """Each member's bytes, or a one-line reason; one open file for the whole run of them."""
    done = 0
    try:
        with open(tar_path, "rb") as f:
            for member in members:
                f.seek(member.offset)
                data = f.read(member.size)
                done += 1
                if len(data) == member.size:
                    yield data
                else:
                    yield f"member cut off: {len(data)} of {member.size} bytes in the tar"
    except OSError as e:
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


_BRACE = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"(-?\d+)\.\.(-?\d+)")


def expand_braces(pattern: str) -> list[str]:
    """WebDataset / bash brace patterns: `{00000..00099}` (zero padding kept), `{a,b}`.

    Braces may repeat (`{a,b}-{0..3}` gives every combination, left to right); a pattern
    without braces is itself. Unbalanced or empty braces raise Sapiens2Error.
    """
    match = _BRACE.search(pattern)
    if match is None:
        if "{" in pattern or "}" in pattern:
            raise Sapiens2Error(f"unbalanced braces in {pattern}: write {{0..9}} or {{a,b}}")
        return [pattern]
    body = match[1]
    if r := _RANGE.fullmatch(body):
        first, last = int(r[1]), int(r[2])
        padded = any(e.lstrip("-").startswith("0") and e.lstrip("-") != "0" for e in r.groups())
        width = max(len(r[1]), len(r[2])) if padded else 0  # bash and braceexpand: 0 is not
        step = 1 if last >= first else -1
        choices = [f"{n:0{width}d}" for n in range(first, last + step, step)]
    elif "," in body:
        choices = body.split(",")
    else:
        raise Sapiens2Error(f"cannot expand {{{body}}} in {pattern}: write {{0..9}} or {{a,b}}")
    head, tail = pattern[: match.start()], pattern[match.end() :]
    return [head + choice + rest for choice in choices for rest in expand_braces(tail)]


def _is_image(info: tarfile.TarInfo) -> bool:
    ext = os.path.splitext(info.name)[1].lower()
    return info.isreg() and not info.issparse() and ext in IMAGE_EXTENSIONS


def _starts_like_tar(tar_path: str) -> bool:
    """A ustar/GNU/pax header's magic at byte 257 of the first block."""
    with open(tar_path, "rb") as f:
        return f.read(tarfile.BLOCKSIZE)[257:262] == b"ustar"


def _end_damage(tar_path: str, offset: int, size: int) -> str | None:
    """Why the headers stopped at `offset`, unless it is the end-of-archive zero block."""
    if offset >= size:
        return "the file ends without the end-of-archive block (truncated?)"
    with open(tar_path, "rb") as f:
        f.seek(offset)
        block = f.read(tarfile.BLOCKSIZE)
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
            if isinstance(data, str):
                yield Failure(item.key, data)
                continue
            try:
                decoded = decode_image(data, prep.size, prep.resize, prep.jpeg_draft)
            except ImageError as e:
                yield Failure(item.key, str(e))
                continue
            yield Row(item.key, decoded.pixels, image_columns(decoded, prep))


class TarSource(Source):
    """Each uncompressed tar file gives its image members, keyed SHARD.tar/MEMBER."""

    extensions = frozenset({".tar"})

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


def expand_patterns(inputs: Sequence[str]) -> list[str]:
    """INPUT arguments with brace patterns (`shards/{00000..00099}.tar`) expanded.

    An argument that exists as a path is taken as is, braces or not; every path a pattern
    gives must exist, as any INPUT must.
    """
    out: list[str] = []
    for item in inputs:
        if "{" not in item or os.path.lexists(item):
            out.append(item)
            continue
        paths = expand_braces(item)
        missing = [p for p in paths if not os.path.lexists(p)]
        if missing:
            raise Sapiens2Error(
                f"input {missing[0]} (from {item}, {len(missing)} of {len(paths)} missing) "
                "does not exist: check the pattern"
            )
        out += paths
    return out
