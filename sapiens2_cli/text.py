"""Wording shared by messages, so counts read right whatever the number."""

from __future__ import annotations


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """'1 part', '0 parts', '1,200 parts'; `nouns` for irregular plurals."""
    return f"{count:,} {noun if count == 1 else nouns or noun + 's'}"
