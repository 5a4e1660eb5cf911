"""The values `--size`, `--layers`, `--batch-size` and `--shard` take, parsed and checked in
one place.

The command line gives text ('1024x768', '8,-1', 'auto'); Python callers may give the same
text or plain values ((1024, 768), (8, -1), 8, None). Both go through these, so a wrong
type is one line naming the option before any work, never an error from deep inside.
"""

from __future__ import annotations

import numbers
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.remote import is_url

#: The largest side `--size` takes: 1024 patches of 16 (the largest arch trains at 4096).
MAX_SIDE = 16384


def parse_size(value: str | Sequence[int]) -> tuple[int, int]:
    """'1024x768' or (1024, 768) -> (H, W); checks the form and the bound only (the model
    checks the multiple)."""
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+)\s*[xX,]\s*(\d+)\s*", value)
        if not match:
            raise Sapiens2Error(f"--size {value!r} is not HxW: write it like 1024x768")
        size = int(match[1]), int(match[2])
    elif _is_sequence(value) and len(value) == 2 and all(map(_is_int, value)):
        size = int(value[0]), int(value[1])
    else:
        raise Sapiens2Error(
            f"--size {value!r} is not (H, W): give two integers like (1024, 768) or '1024x768'"
        )
    if max(size) > MAX_SIDE:
        raise Sapiens2Error(
            f"--size {size[0]}x{size[1]} is too large: each side is at most {MAX_SIDE} "
            "pixels (the arch's training size, such as 1024x768, is the default)"
        )
    return size


def parse_layers(value: str | int | Sequence[int]) -> tuple[int, ...]:
    """'-1', '8,17', '8 17', 8 or (8, 17) -> block indices (checked against the model later)."""
    if isinstance(value, str):
        items = re.split(r"\s*,\s*|\s+", value.strip())
        if not all(re.fullmatch(r"[+-]?\d+", p) for p in items):
            raise Sapiens2Error(
                f"--layers {value!r} is not a list of block indices: write it like -1 or 8,17"
            )
        return tuple(int(p) for p in items)
    if _is_int(value):
        return (int(value),)
    if _is_sequence(value) and value and all(map(_is_int, value)):
        return tuple(int(v) for v in value)
    if _is_sequence(value) and not value:
        raise Sapiens2Error("--layers is empty: give block indices such as -1 or 8,17")
    raise Sapiens2Error(
        f"--layers {value!r} is not block indices: give integers like (8, -1), -1 or '8,-1'"
    )


def parse_batch_size(value: str | int | None) -> int | None:
    """A positive count, or None for auto (the largest that fits in GPU memory)."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not _is_int(value):
        raise Sapiens2Error(f"--batch-size {value!r} is neither a positive number nor auto")
    if value < 1:
        raise Sapiens2Error(f"--batch-size must be at least 1 (or auto), not {value}")
    return int(value)


def _is_int(value: object) -> bool:
    """An integer, not a bool (True is not a block index) nor a float (64.0 is no size)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_sequence(value: object) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def parse_shard(value: str | Part) -> Part:
    """'1/4' -> part 1 of 4 (counting from 0, as SLURM array indices do)."""
    if isinstance(value, Part):
        return value
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", value or "")
    if match is None:
        raise Sapiens2Error(f"--shard {value!r} is not I/N: write it like 0/4 (part 0 of 4)")
    return Part(int(match[1]), int(match[2]))


def parse_lists(value: str | os.PathLike | Sequence[str | os.PathLike]) -> tuple[Path | str, ...]:
    """--files-from: one list or several; local paths as Paths, URLs as text."""
    lists = (value,) if isinstance(value, (str, os.PathLike)) else value
    return tuple(f if is_url(str(f)) else Path(f) for f in lists)


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
