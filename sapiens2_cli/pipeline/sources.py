"""Which images a run covers: folders walked recursively, single files, lists of paths.

The list is computed once, in a stable order, so a run can be resumed, split into parts
(`--shard I/N`, several ranks) or merged later by position or by path.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TextIO

from PIL import Image

from sapiens2_cli.errors import Sapiens2Error

#: Extensions picked up when walking a folder (case-insensitive). Files named explicitly,
#: or listed on stdin / --files-from, are taken whatever their extension.
_WANTED = (
    ".jpg .jpeg .jpe .jfif .png .apng .gif .bmp .dib .tif .tiff .webp "
    ".ppm .pgm .pbm .pnm .tga .qoi .jp2 .j2k .avif"
)
IMAGE_EXTENSIONS = frozenset(_WANTED.split()) & {e.lower() for e in Image.registered_extensions()}


def walk_images(folder: str) -> list[str]:
    """Image files under `folder`, sorted by relative path, each as `folder` joined with it.

    Symbolic links to folders are not followed (they can loop); links to files are kept.
    """
    found: list[tuple[tuple[str, ...], str]] = []

    def fail(error: OSError) -> None:
        raise Sapiens2Error(f"cannot read folder {error.filename} ({error.strerror}): check it")

    for root, dirs, files in os.walk(folder, onerror=fail):
        dirs.sort()
        rel_root = os.path.relpath(root, folder)
        for name in files:
            if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                rel = os.path.normpath(os.path.join(rel_root, name))
                found.append((tuple(Path(rel).parts), os.path.join(folder, rel)))
    found.sort()
    return [path for _, path in found]


def read_path_list(stream: TextIO) -> list[str]:
    """Newline-separated paths (blank lines skipped; spaces inside a path kept)."""
    return [line.rstrip("\r\n") for line in stream if line.strip()]


def list_images(
    inputs: Sequence[str], files_from: Sequence[str | Path] = (), stdin: TextIO | None = None
) -> list[str]:
    """Every image a run covers, once each, in a stable order.

    INPUT arguments must exist (a typo should stop the run, not be recorded as a failure);
    paths from `-` (stdin) or `--files-from` are taken as given, so a missing one becomes a
    failure record. Folders are walked wherever they appear.
    """
    paths: list[str] = []
    for item in inputs:
        if item == "-":
            if stdin is None:
                raise Sapiens2Error("'-' reads paths from stdin, which is not available here")
            paths += _expand(read_path_list(stdin), strict=False)
        elif not os.path.exists(item):
            raise Sapiens2Error(f"input {item} does not exist: check the path")
        else:
            paths += _expand([item], strict=True)
    for list_file in files_from:
        try:
            with open(list_file, encoding="utf-8") as f:
                listed = read_path_list(f)
        except OSError as e:
            raise Sapiens2Error(f"cannot read --files-from {list_file} ({e.strerror})") from None
        paths += _expand(listed, strict=False)
    unique = list(dict.fromkeys(paths))
    if not unique:
        raise Sapiens2Error(
            "no images found in the inputs: give image files or folders holding "
            f"{', '.join(sorted(IMAGE_EXTENSIONS)[:6])}, … files"
        )
    return unique


def _expand(items: Iterable[str], strict: bool) -> list[str]:
    out: list[str] = []
    for item in items:
        if os.path.isdir(item):
            out += walk_images(item)
        elif strict and not os.path.isfile(item):
            raise Sapiens2Error(f"input {item} is not a file or folder: check the path")
        else:
            out.append(item)
    return out
