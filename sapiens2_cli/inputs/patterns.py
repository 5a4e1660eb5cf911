"""Brace patterns in INPUT arguments (`shards/{00000..00099}.tar`, `{train,val}/`), as
WebDataset and bash write them; they apply to every kind of input."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.remote import is_url

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


def expand_patterns(inputs: Sequence[str]) -> list[str]:
    """INPUT arguments with brace patterns (`shards/{00000..00099}.tar`) expanded.

    An argument that exists as a path is taken as is, braces or not; every path a pattern
    gives must exist, as any INPUT must.
    """
    out: list[str] = []
    for item in inputs:
        if "{" not in item or (not is_url(item) and os.path.lexists(item)):
            out.append(item)
            continue
        paths = expand_braces(item)
        missing = [p for p in paths if not is_url(p) and not os.path.lexists(p)]
        if missing:
            raise Sapiens2Error(
                f"input {missing[0]} (from {item}, {len(missing)} of {len(paths)} missing) "
                "does not exist: check the pattern"
            )
        out += paths
    return out
