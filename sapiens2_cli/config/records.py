"""What OUT records, read from the declarations: every key with its meaning and resume rule
(the options OUT records, then the facts of config/settings.py's DERIVED), the values a run
records, and the comparison a resume makes."""

from __future__ import annotations

from collections.abc import Collection

from sapiens2_cli.config.options import ExtractOptions, declarations
from sapiens2_cli.config.settings import DERIVED, Record, record_rank, stored


def records() -> dict[str, Record]:
    """Every key OUT records, with its meaning and resume rule: the options OUT records,
    then the facts the run derives (config/settings.py)."""
    found = {}
    for name, s in declarations().items():
        if s.record is not None:
            flag = s.resume if isinstance(s.resume, str) else s.flag(name)
            found[s.record_as or name] = Record(s.record, flag if s.resume else None)
    every = {**found, **DERIVED}
    return {key: every[key] for key in sorted(every, key=record_rank)}


def resume_keys() -> dict[str, str]:
    """Settings a resume must match, with the flag that sets each."""
    return {key: r.resume for key, r in records().items() if r.resume}


def settings_docs() -> dict[str, str]:
    """Each settings key's one-line meaning."""
    return {key: r.doc for key, r in records().items()}


def recorded(opts: ExtractOptions) -> dict[str, object]:
    """The settings OUT records from settled, resolved options (as files store them),
    but those the input kinds record themselves (`by_source`)."""
    return {
        s.record_as or name: stored(getattr(opts, s.record_as or name))
        for name, s in declarations().items()
        if s.record is not None and not s.by_source
    }


def difference(existing: dict, wanted: dict, keys: Collection[str] | None = None) -> str | None:
    """The first setting a resume must match (of `keys`, default all; in the order OUT
    records them) that differs between `existing` and `wanted`, phrased for an error
    message, or None if they agree."""
    flags = resume_keys()
    for key in flags if keys is None else [k for k in flags if k in keys]:
        there, now = existing.get(key), wanted.get(key)
        if there != now:
            return f"{flags[key]} ({key} is {there!r} there, {now!r} now)"
    return None
