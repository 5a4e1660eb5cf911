"""Which files a run covers, and the items (future rows) each one gives.

Listing turns the inputs (files, folders walked recursively, `-` for stdin, `--files-from`
lists) into one list of files, each named by its absolute, resolved path: that path is an
image's identity, so `./a.jpg`, `a.jpg`, `/abs/a.jpg` and the same folder reached through
a symbolic link are one image, and a run resumed from another working folder finds it done.
The list is computed once, in a stable order, so a run can be resumed or split into parts
(which are assigned per file). A URL (`s3://bucket/prefix/`, remote.py) is an
object or a prefix listed in one paginated listing, and is its own identity.

Each file then goes to the first Source that claims it (by its extension, the image
source taking the rest), which expands it into items. A new kind of input is a Source
here and a Reader (inputs/items.py); the writers, resume and parts do not change.
"""

from __future__ import annotations

import io
import os
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from PIL import Image

from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.inputs.items import Failure, ImageReader, Item, file_key
from sapiens2_cli.remote import check_url, errors, is_url, list_objects, local_path, read_bytes

#: Extensions picked up when walking a folder (case-insensitive). Files named explicitly,
#: or listed on stdin / --files-from, are taken whatever their extension.
_WANTED = (
    ".jpg .jpeg .jpe .jfif .png .apng .gif .bmp .dib .tif .tiff .webp "
    ".ppm .pgm .pbm .pnm .tga .qoi .jp2 .j2k .avif"
)
IMAGE_EXTENSIONS = frozenset(_WANTED.split()) & {e.lower() for e in Image.registered_extensions()}


@dataclass
class Expansion:
    """What a source made of its files: the items, files that gave none, members ignored."""

    items: list[Item] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    ignored: int = 0  # e.g. non-image members of a tar file: counted, not errors

    def extend(self, other: Expansion) -> None:
        self.items += other.items
        self.failures += other.failures
        self.ignored += other.ignored


class Source(ABC):
    """A kind of input file: which files it claims and the items it makes of them."""

    #: Extensions (lower case, with the dot; `.tar.gz` style too) it claims, in folders
    #: and when named.
    extensions: frozenset[str] = frozenset()

    def claims(self, path: str) -> bool:
        return has_extension(path, self.extensions)

    @abstractmethod
    def expand(self, files: Sequence[str]) -> Expansion:
        """Items for `files` (absolute resolved paths), in order; never raises for a bad file."""

    def settings(self) -> dict[str, object]:
        """What this source records in OUT's settings (keys that config/options.py and
        config/settings.py declare, with their resume rules)."""
        return {}


class ImageSource(Source):
    """Each file is one image, one row, keyed by its path (`file_key`)."""

    extensions = IMAGE_EXTENSIONS

    def claims(self, path: str) -> bool:
        return True  # the fallback: a file named explicitly is read as an image

    def expand(self, files: Sequence[str]) -> Expansion:
        reader = ImageReader()
        return Expansion([Item(file_key(path), path, reader) for path in files])


def has_extension(name: str, extensions: Collection[str]) -> bool:
    """Whether `name` ends with one of `extensions`, case-insensitively: an ending rather
    than os.path.splitext, which would see `.gz` in `shard.tar.gz`."""
    return name.lower().endswith(tuple(extensions))


def source_of(path: str, sources: Sequence[Source]) -> Source:
    """The source that makes the rows of file `path`: the first that claims it."""
    return next(s for s in sources if s.claims(path))


def expand(files: Sequence[str], sources: Sequence[Source]) -> Expansion:
    """Every file's items, in the files' order (consecutive files of one source together)."""
    result = Expansion()
    run: list[str] = []
    current: Source | None = None
    for path in files:
        source = source_of(path, sources)
        if source is not current and run:
            result.extend(current.expand(run))
            run = []
        current = source
        run.append(path)
    if run:
        result.extend(current.expand(run))
    return result


@dataclass(frozen=True)
class Listing:
    """How inputs are listed: which extensions a folder walk picks up, and hidden files."""

    extensions: frozenset[str] = IMAGE_EXTENSIONS
    hidden: bool = False  # walk into hidden folders and take hidden files (names with a dot)
    null: bool = False  # stdin / --files-from separate paths by NUL bytes (find -print0)


def identity(path: str) -> str:
    """What identifies a file: its absolute path with every symbolic link resolved; a URL
    (remote.py) is its own identity."""
    return path if is_url(path) else os.path.realpath(path)


def wanted(relative: str, listing: Listing) -> bool:
    """Whether a walk or a prefix listing takes the file at `relative` (a '/' path)."""
    names = relative.split("/")
    if not listing.hidden and any(name.startswith(".") for name in names):
        return False  # .DS_Store, macOS ._* resource forks, editors' temporary files
    return has_extension(names[-1], listing.extensions)


def walk(folder: str, listing: Listing = Listing()) -> list[str]:
    """Files under `folder` with a wanted extension, sorted by relative path, each as
    `folder` joined with it (resolved where it is a link; pass a resolved folder to get
    identities). Links to folders are not followed (they can loop)."""
    found: list[tuple[tuple[str, ...], str]] = []

    def fail(error: OSError) -> None:
        raise Sapiens2Error(f"cannot read folder {error.filename} ({error.strerror}): check it")

    for root, dirs, files in os.walk(folder, onerror=fail):
        if not listing.hidden:
            dirs[:] = [d for d in dirs if not d.startswith(".")]
        dirs.sort()
        rel_root = os.path.relpath(root, folder)
        for name in files:
            if wanted(name, listing):
                rel = os.path.normpath(os.path.join(rel_root, name))
                path = os.path.join(folder, rel)
                if os.path.islink(path):  # under a resolved folder only links need resolving
                    path = identity(path)
                found.append((tuple(Path(rel).parts), path))
    found.sort()
    return [path for _, path in found]


def read_path_list(stream: BinaryIO, what: str, null: bool = False) -> list[str]:
    """Paths from a list, one a line (or NUL-separated), as bytes decoded the way the OS
    names files (any bytes survive); blank entries skipped, spaces inside kept."""
    data = stream.read()
    if not null and b"\0" in data:
        raise Sapiens2Error(
            f"{what} holds NUL bytes, so it is not a list of paths one a line: give a text "
            "file, or pass --null for NUL-separated paths (find -print0)"
        )
    entries = data.split(b"\0") if null else data.splitlines()
    return [os.fsdecode(e.rstrip(b"\r") if not null else e) for e in entries if e.strip()]


def list_files(
    inputs: Sequence[str],
    files_from: Sequence[str | Path] = (),
    stdin: BinaryIO | None = None,
    listing: Listing = Listing(),
) -> list[str]:
    """Every file a run covers, as identities (`identity`), once each, in a stable order.

    INPUT arguments must exist (a typo should stop the run, not be recorded as a failure);
    paths from `-` (stdin) or `--files-from` are taken as given, so a missing one becomes a
    failure record. Folders are walked wherever they appear.
    """
    if not inputs and not files_from:
        raise Sapiens2Error(
            "no inputs given: name image files or folders, - to read paths from stdin, "
            "or --files-from LIST"
        )
    paths: list[str] = []
    for item in inputs:
        if item == "-":
            if stdin is None:
                raise Sapiens2Error("'-' reads paths from stdin, which is not available here")
            paths += _expand(read_path_list(stdin, "stdin", listing.null), listing, strict=False)
        elif not is_url(item) and not os.path.lexists(local_path(item)):
            raise Sapiens2Error(f"input {item} does not exist: check the path")
        else:
            paths += _expand([item], listing, strict=True)
    for list_file in files_from:
        what = f"--files-from {list_file}"
        try:
            with _open_list(str(list_file)) as f:
                listed = read_path_list(f, what, listing.null)
        except OSError as e:
            raise Sapiens2Error(f"cannot read {what} ({e.strerror})") from None
        paths += _expand(listed, listing, strict=False)
    unique = list(dict.fromkeys(paths))
    if not unique:
        shown = ", ".join(sorted(listing.extensions)[:6])
        raise Sapiens2Error(
            f"no input files found: give image files or folders holding {shown}, … files"
        )
    return unique


def list_images(inputs: Sequence[str], listing: Listing = Listing()) -> list[str]:
    """Image files under `inputs` (files or folders), as identities: for scripts."""
    return list_files(inputs, listing=listing)


def _open_list(list_file: str) -> BinaryIO:
    """A --files-from list, local or at a URL."""
    if is_url(list_file):
        with errors(f"--files-from {list_file}"):
            return io.BytesIO(read_bytes(list_file))
    return open(list_file, "rb")


def _expand(items: Iterable[str], listing: Listing, strict: bool) -> list[str]:
    """`items` as identities, folders walked. A URL is listed as a prefix when given as
    an INPUT (`strict`) or ending with '/'; other URLs from a list are taken as objects
    (checking each would be a request per object)."""
    out: list[str] = []
    for item in items:
        if is_url(item):
            if strict or item.endswith("/"):
                out += list_objects(item, lambda rel: wanted(rel, listing))
            else:
                check_url(item)
                out.append(item)
            continue
        item = local_path(item)
        if os.path.isdir(item):
            out += walk(identity(item), listing)
        elif strict and not os.path.isfile(item):
            raise Sapiens2Error(f"input {item} is not a file or folder: check the path")
        else:
            out.append(identity(item))
    return out
