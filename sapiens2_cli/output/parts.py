"""Parts of one output: how a split job names them and which part each input file goes to.

Part k of a split into N lives at `OUT.parts/part-0000k-of-0000N.h5` (HDF5; the suffix is
OUT's) or `OUT.parts/part-0000k-of-0000N/` (npy), and records `part = [k, N]` in its
settings. A file's part is fixed by a hash of its identity (crc32 of the path's bytes: the
same on every machine and Python), not by its position in the list: files added to a
folder later move no file to another part, so each part resumes exactly as a single run
does, and every row of a file (its boxes, frames or members) stays in one part.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from pathlib import Path

from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.output.opening import remove_output
from sapiens2_cli.output.reader import FeatureFile

PART_NAME = re.compile(r"part-(\d{5,})-of-(\d{5,})(\.h5|\.hdf5)?", re.IGNORECASE)


def parse_shard(text: str) -> Part:
    """'1/4' -> part 1 of 4 (counting from 0, as SLURM array indices do)."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if match is None:
        raise Sapiens2Error(f"--shard {text!r} is not I/N: write it like 0/4 (part 0 of 4)")
    return Part(int(match[1]), int(match[2]))


def part_index(file: str, count: int) -> int:
    """The part, of `count`, that an input file (and every row it gives) belongs to."""
    return zlib.crc32(file.encode("utf-8", "surrogateescape")) % count


@dataclass(frozen=True)
class Part:
    """Part `index` (0-based) of a split into `count`."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise Sapiens2Error(
                f"there is no part {self.index} of {self.count}: write --shard I/N with I "
                "from 0 to N-1"
            )

    def __str__(self) -> str:
        return f"part {self.index} of {self.count}"

    def path(self, out: Path, fmt: str) -> Path:
        """Where this part of `out` (an `fmt` output) is written."""
        suffix = (out.suffix or ".h5") if fmt == "h5" else ""
        return parts_folder(out) / f"part-{self.index:05d}-of-{self.count:05d}{suffix}"


@dataclass
class PartFile:
    """An output opened to be joined: where it is, its reader, and the part it records."""

    path: Path
    file: FeatureFile
    part: Part | None


def parts_folder(out: Path) -> Path:
    """The folder beside OUT that holds its parts."""
    return out.with_name(out.name + ".parts")


def part_of_name(path: Path) -> Part | None:
    """The part a file or folder name says it is, if it is named like one."""
    match = PART_NAME.fullmatch(path.name)
    if match is None or int(match[1]) >= int(match[2]):
        return None
    return Part(int(match[1]), int(match[2]))


def find_parts(out: Path) -> list[Path]:
    """Parts present beside `out`, by split size then index."""
    return parts_in(parts_folder(out))


def parts_in(folder: Path) -> list[Path]:
    """Files or folders in `folder` named like parts, by split size then index."""
    if not folder.is_dir():
        return []
    found = [(part, p) for p in folder.iterdir() if (part := part_of_name(p))]
    return [p for part, p in sorted(found, key=lambda x: (x[0].count, x[0].index))]


def check_split(out: Path, count: int, overwrite: bool, remove: bool) -> None:
    """Refuse parts beside OUT from a split into another number of parts (their images are
    divided differently); with `overwrite`, the process that `remove`s deletes them."""
    stale = [p for p in find_parts(out) if part_of_name(p).count != count]
    if not stale:
        return
    other = part_of_name(stale[0]).count
    if not overwrite:
        raise Sapiens2Error(
            f"{parts_folder(out)} holds parts of a split into {other}, but this run splits "
            f"into {count}: run with {other} ranks (or --shard I/{other}), or pass --overwrite "
            "to start again"
        )
    if remove:
        for p in stale:
            remove_output(p)
