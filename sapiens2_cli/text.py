"""Wording shared by the commands' messages."""

from __future__ import annotations


def plural(count: int, noun: str, plural_form: str | None = None) -> str:
    """'1 image', '2 images', '0 images' (`plural_form` for irregular nouns)."""
    return f"{count} {noun if count == 1 else plural_form or noun + 's'}"


def one_line(error: BaseException) -> str:
    """An exception's message folded onto one line (its type's name when it has none), for
    failure records and error lines."""
    return " ".join(str(error).split()) or type(error).__name__


def open_failure(error: OSError, kind: str) -> str | None:
    """The one-line reason for a named file that could not even be opened (missing, a
    folder, not ours to read), worded alike for every kind of input (`kind`: "an image
    file", "a tar file"...); None for other errors, whose reason depends on the format."""
    if isinstance(error, FileNotFoundError):
        return "file not found"
    if isinstance(error, IsADirectoryError):
        return f"is a folder, not {kind}"
    if isinstance(error, PermissionError):
        return "permission denied"
    return None
