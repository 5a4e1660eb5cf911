"""Person box files -> the boxes of each image, for one row per person (`extract --boxes`).

Layouts (COCO annotations, COCO detection results, JSONL, CSV) are read by `box_formats`.

A box file that cannot be used stops the run before any work (Sapiens2Error, one line).
A box that cannot be cropped (NaN or beyond float32, zero or negative size, entirely
outside its image) is kept here and becomes a failure of its own row (`box_problem`), so
one bad box never costs the others.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np

from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.inputs.boxes.formats import BoxLayout, RawBox, parse_box_file
from sapiens2_cli.remote import errors, is_url, read_bytes


@dataclass(frozen=True, slots=True)
class Box:
    """One person box, in image pixels after EXIF orientation."""

    x: float  # left, as given (rounded to float32, what is stored and cropped)
    y: float  # top
    w: float  # width
    h: float  # height
    box_id: int  # annotation/detection id, or the box's index among its image's entries
    score: float = math.nan  # detector score; NaN when the file has none

    def xywh(self) -> np.ndarray:
        return np.array([self.x, self.y, self.w, self.h], np.float32)


@dataclass
class BoxFile:
    """A parsed box file: the boxes of each image, and what was left out on purpose."""

    path: str
    layout: BoxLayout
    images: dict[str, list[Box]]  # image path (image folder joined with the name) -> boxes
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> boxes left out

    @property
    def box_count(self) -> int:
        return sum(len(boxes) for boxes in self.images.values())


def box_problem(box: Box, image_size: tuple[int, int] | None = None) -> str | None:
    """Why `box` cannot be cropped (one line), or None; `image_size` is (height, width)."""
    coords = (box.x, box.y, box.w, box.h)
    if not all(math.isfinite(v) for v in coords):
        return (
            f"box {box.box_id} has a NaN or infinite coordinate, or one beyond float32's "
            f"range (x, y, w, h = {_fmt(coords)})"
        )
    if box.w <= 0 or box.h <= 0:
        return f"box {box.box_id} has zero or negative size (w = {box.w:g}, h = {box.h:g})"
    if image_size is not None:
        height, width = image_size
        if box.x >= width or box.y >= height or box.x + box.w <= 0 or box.y + box.h <= 0:
            return (
                f"box {box.box_id} (x, y, w, h = {_fmt(coords)}) lies entirely outside "
                f"the {width}x{height} image"
            )
    return None


def load_boxes(
    path: str | Path,
    image_root: str,
    min_score: float | None = None,
    include_crowd: bool = False,
) -> BoxFile:
    """Read a box file of any layout; image names are resolved against `image_root`.

    `min_score` leaves out boxes scored below it, comparing the score as the file writes
    it (before float32), so a box scored exactly `min_score` is kept; boxes without a
    score are kept. `include_crowd` keeps COCO crowd boxes. Raises Sapiens2Error for a
    NaN `min_score` (it would keep every box) and for a file that cannot be used:
    unreadable, not JSON/JSONL/CSV, an unknown layout, a malformed entry, an image id
    with no file, a box id given twice for one image, or no image found at all.
    """
    if min_score is not None and math.isnan(min_score):
        raise Sapiens2Error("--min-score nan is not a score: give a number, like 0.3")
    name = str(path)
    try:
        with _open_text(name) as f:
            layout, raw = parse_box_file(f, name, image_root)
    except OSError as e:
        raise Sapiens2Error(f"cannot read box file {name} ({e.strerror})") from None
    except UnicodeDecodeError:
        raise Sapiens2Error(
            f"box file {name} is not text: give COCO JSON, detection results, JSONL or CSV"
        ) from None
    return _collect(name, layout, raw, image_root, min_score, include_crowd)


def _open_text(path: str) -> TextIO:
    """A box file, local or at a URL (remote.py), as text (a UTF-8 BOM skipped)."""
    if is_url(path):
        with errors(f"box file {path}"):
            return io.TextIOWrapper(io.BytesIO(read_bytes(path)), "utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def _collect(
    name: str,
    layout: BoxLayout,
    raw: Iterable[RawBox],
    image_root: str,
    min_score: float | None,
    include_crowd: bool,
) -> BoxFile:
    kept: list[RawBox] = []
    dropped: dict[str, int] = {}
    index: dict[str, int] = {}  # boxes of each image so far, left-out ones included
    for name_in_file, xywh, box_id, score, reason in raw:
        image = os.path.join(image_root, os.path.normpath(name_in_file))
        n = index[image] = index.get(image, -1) + 1
        if reason == "crowd" and include_crowd:
            reason = None
        if reason is None and min_score is not None and score < min_score:
            reason = f"score below {min_score:g}"
        if reason is None:
            kept.append((image, xywh, n if box_id is None else box_id, score, None))
        else:
            dropped[reason] = dropped.get(reason, 0) + 1
    # float32 once for all boxes: what is stored, and what upstream crops from; a value
    # beyond float32's range becomes infinite silently, and box_problem fails its box
    with np.errstate(over="ignore"):
        coords = np.array([entry[1] for entry in kept], np.float32).reshape(-1, 4).tolist()
        scores = np.array([entry[3] for entry in kept], np.float32).tolist()
    per_image: dict[str, list[Box]] = {}
    for (image, _, box_id, _, _), (x, y, w, h), score in zip(kept, coords, scores, strict=True):
        per_image.setdefault(image, []).append(Box(x, y, w, h, box_id, score))
    if not per_image:
        left_out = ", ".join(f"{n} {why}" for why, n in dropped.items()) or "none"
        raise Sapiens2Error(f"box file {name} holds no person boxes to crop (left out: {left_out})")
    images: dict[str, list[Box]] = {}
    for image in sorted(per_image, key=lambda p: Path(p).parts):
        seen: set[int] = set()
        for box in per_image[image]:
            if box.box_id in seen:
                raise Sapiens2Error(
                    f"box file {name} gives box id {box.box_id} twice for image {image}: "
                    "ids must be unique within an image"
                )
            seen.add(box.box_id)
        images[image] = per_image[image]
    if not is_url(image_root) and not any(os.path.exists(p) for p in images):
        raise Sapiens2Error(
            f"none of the {len(images)} images named in box file {name} exist under "
            f"{image_root} (e.g. {next(iter(images))}): give the folder the names are relative to"
        )
    return BoxFile(name, layout, images, dropped)


def _fmt(values: Iterable[float]) -> str:
    return ", ".join(f"{v:g}" for v in values)
