"""Parts of one output on disk: how a split job's parts are named and found.

Part k of a split into N lives at `OUT.parts/part-0000k-of-0000N.h5` (HDF5; the suffix is
OUT's) or `OUT.parts/part-0000k-of-0000N/` (npy), and records `part = [k, N]` in its
settings. Which input goes to which part is the split job's (scaleout/part_job.py).
"""

from __future__ import annotations

import re
from pathlib import Path

from sapiens2_cli.config.values import Part
from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.output.opening import remove_output

PART_NAME = re.compile(r"part-(\d{5,})-of-(\d{5,})(\.h5|\.hdf5)?", re.IGNORECASE)


def part_path(out: Path, part: Part, fmt: str) -> Path:
    """Where `part` of `out` (an `fmt` output) is written."""
    suffix = (out.suffix or ".h5") if fmt == "h5" else ""
    return parts_folder(out) / f"part-{part.index:05d}-of-{part.count:05d}{suffix}"


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
