"""What the pipeline moves: items (a row to make), readers (how to make it), rows, failures.

An item is one future row of the output: its `key` (what `paths` stores, and what resume,
parts and failure records go by) and how to get its pixels: the `file` that holds them,
the `reader` that decodes them and, when a file holds several rows (the boxes of a photo,
the frames of a video, the members of a tar file), a `locator` saying which. The writers,
resume and parts only ever see keys and files; a new kind of input is a new Reader and a
new Source (inputs/sources.py), nothing else.

Keys (docs/format.md): a file's key is its path with every '#' doubled (`file_key`); an item
inside a file (a video frame, a person box) adds one '#' and a fragment without '#'
(`derived_key`: `/d/clip.mp4#t=1.000`). So no file's key equals a derived item's, even for
a photo named `clip.mp4#t=1.000`, and `split_key` gives the path and fragment back. Paths
without '#' are their own key.

Readers run in decode worker processes, so items and readers are small and picklable.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from sapiens2_cli.config.choices import ResizeMode


def file_key(path: str) -> str:
    """The key of a whole file (or of a tar member, `TAR/MEMBER`): `path`, '#' doubled."""
    return path.replace("#", "##")


def derived_key(path: str, fragment: str) -> str:
    """The key of one item inside the file at `path`: `fragment` ('t=1.000', 'box=3') holds
    no '#', so the single '#' before it marks where the file's key ends."""
    return f"{file_key(path)}#{fragment}"


_KEY = re.compile(r"((?:[^#]|##)*)(?:#([^#]*))?", re.DOTALL)


def split_key(key: str) -> tuple[str, str | None]:
    """(path, fragment) of a key, undoing `file_key` / `derived_key`; fragment None for a
    whole file. Text that no key is (a single '#' before another '#') raises ValueError."""
    match = _KEY.fullmatch(key)
    if match is None:
        raise ValueError(f"{key!r} is not a key: a '#' in a path is doubled")
    return match[1].replace("##", "#"), match[2]


@dataclass(frozen=True)
class Preprocess:
    """How any reader turns pixels into the model's input."""

    size: tuple[int, int]  # (H, W)
    resize: ResizeMode = ResizeMode.STRETCH
    jpeg_draft: bool = False  # JPEG reduced-size decode (off by default)


@dataclass(frozen=True)
class Item:
    """One row to make. `columns` holds per-row values known before decoding."""

    key: str
    file: str  # the file whose bytes hold the pixels; parts are assigned per file
    reader: Reader
    locator: object = None  # where in `file`; None: the whole file is one image
    columns: dict[str, np.ndarray] = field(default_factory=dict, compare=False)


@dataclass
class Row:
    """A decoded item: the model input and its per-row columns (fixed shape and dtype)."""

    key: str
    pixels: np.ndarray  # (H, W, 3) uint8 RGB
    columns: dict[str, np.ndarray]


@dataclass
class Failure:
    """An item (or the rest of a damaged file) that gives no row, with a one-line reason."""

    key: str
    reason: str


class Reader(ABC):
    """Decodes consecutive items of one file, in a decode worker; never raises on bad input.

    It yields one Row or Failure per item, in order, except that on a damaged file it may
    stop early with one Failure (keyed by the file) standing for the items it could not
    produce.
    """

    #: Items of one file handed to one `read` call at most; None: all of them (a file
    #: decoded once for every row, like a photo for all its boxes).
    chunk_rows: int | None = 1

    @abstractmethod
    def read(self, items: Sequence[Item], prep: Preprocess) -> Iterator[Row | Failure]: ...


class ImageReader(Reader):
    """A whole image file is one row (the plain case)."""

    chunk_rows = 1

    def read(self, items: Sequence[Item], prep: Preprocess) -> Iterator[Row | Failure]:
        from sapiens2_cli.inputs.decode import ImageError, decode_image

        for item in items:
            try:
                decoded = decode_image(item.file, prep.size, prep.resize, draft=prep.jpeg_draft)
            except ImageError as e:
                yield Failure(item.key, str(e))
                continue
            yield Row(item.key, decoded.pixels, image_columns(decoded, prep))

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self)

    def __hash__(self) -> int:
        return hash(type(self))


def bytes_row(item: Item, data: bytes | str, prep: Preprocess) -> Row | Failure:
    """An image file's bytes read from inside another file (a tar member, a Parquet cell)
    decoded as a loose file is, or the item's failure (`data` a one-line reason)."""
    from sapiens2_cli.inputs.decode import ImageError, decode_image

    if isinstance(data, str):
        return Failure(item.key, data)
    try:
        decoded = decode_image(data, prep.size, prep.resize, prep.jpeg_draft)
    except ImageError as e:
        return Failure(item.key, str(e))
    return Row(item.key, decoded.pixels, image_columns(decoded, prep))


def image_columns(decoded, prep: Preprocess) -> dict[str, np.ndarray]:
    """The columns every image row has: its size after EXIF, and the letterbox's content."""
    columns = {"original_size": np.asarray(decoded.original_size, np.int32)}
    if prep.resize == ResizeMode.LETTERBOX:
        columns["content_box"] = np.asarray(decoded.content_box, np.int32)
    return columns
