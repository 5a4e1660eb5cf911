"""Person crops (`extract --boxes`): one row per box, cropped exactly as upstream's pose
pipeline does.

Upstream's test-time transform (`PoseGetBBoxCenterScale` then `PoseTopdownAffine` with
`use_udp=True`; step by step in docs/crop.md): the box's center and padded
scale, the scale's aspect fixed to the input's W:H, the UDP affine matrix, and
`cv2.warpAffine` to exactly H x W, bilinear when shrinking and bicubic when enlarging,
black outside the image. The same OpenCV call makes the same pixels; the arithmetic is
done in float32, as upstream's (its boxes are float32 arrays), so the matrix matches too.

As an input kind: `BoxSource` turns the images named in a box file into one item per box
(key: the image's path, then "#box=<id>": `box_key`), and `CropReader` decodes each image
once for all its boxes, in a decode worker.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from sapiens2_cli.config.options import DEFAULTS
from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.files import file_sha256
from sapiens2_cli.inputs.boxes.box_file import Box, BoxFile, box_problem, load_boxes
from sapiens2_cli.inputs.decode import ImageError, read_rgb
from sapiens2_cli.inputs.items import Failure, Item, Preprocess, Reader, Row, derived_key
from sapiens2_cli.inputs.sources import Expansion, Source, identity
from sapiens2_cli.remote import is_url

#: Upstream's default padding around a box (`PoseGetBBoxCenterScale`).
DEFAULT_PADDING = DEFAULTS.box_padding


@dataclass
class Crop:
    pixels: np.ndarray  # (H, W, 3) uint8 RGB, the model input
    affine: np.ndarray  # (2, 3) float32: image pixel (x, y, 1) -> crop pixel (u, v)


def center_scale(
    box: Box, size: tuple[int, int], padding: float = DEFAULT_PADDING
) -> tuple[np.ndarray, np.ndarray]:
    """Center (x, y) and scale (w, h) in image pixels, float32, aspect fixed to W:H."""
    x1, y1, w, h = box.xywh()
    x2, y2 = x1 + w, y1 + h  # corners as upstream forms them (float32 sums)
    center = np.array([x1 + x2, y1 + y2], np.float32) * np.float32(0.5)
    scale_w, scale_h = np.array([x2 - x1, y2 - y1], np.float32) * np.float32(padding)
    aspect = np.float32(size[1] / size[0])
    if scale_w > scale_h * aspect:
        scale = np.array([scale_w, scale_w / aspect], np.float32)
    else:
        scale = np.array([scale_h * aspect, scale_h], np.float32)
    return center, scale


def udp_affine(center: np.ndarray, scale: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """UDP warp matrix (no rotation): image pixels -> crop pixels of an H x W crop."""
    height, width = size
    kx = np.float32(width - 1) / scale[0]
    ky = np.float32(height - 1) / scale[1]
    half = scale * np.float32(0.5)
    return np.array(
        [[kx, 0, kx * (half[0] - center[0])], [0, ky, ky * (half[1] - center[1])]], np.float32
    )


def crop_box(
    image: np.ndarray, box: Box, size: tuple[int, int], padding: float = DEFAULT_PADDING
) -> Crop:
    """Crop `box` from an (h, w, 3) uint8 RGB image to `size` = (H, W); raises ImageError.

    The box must be usable (`box_problem`) and its matrix finite in float32 (upstream's
    arithmetic); the reason it is not is the error's message.
    """
    problem = box_problem(box, image.shape[:2])
    if problem:
        raise ImageError(problem)
    with np.errstate(all="ignore"):  # a box too big or small for float32: refused below
        affine = udp_affine(*center_scale(box, size, padding), size)
    if not np.isfinite(affine).all():
        raise ImageError(
            f"box {box.box_id} (w = {box.w:g}, h = {box.h:g}) is too large or too small to "
            "crop in float32 arithmetic"
        )
    return Crop(warp(image, affine, size), affine)


def warp(image: np.ndarray, affine: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`image` through `affine` to (H, W) = `size`, with upstream's interpolation for it.

    Upstream passes INTER_AREA when the matrix shrinks (scale below 1) and INTER_CUBIC
    otherwise; warpAffine runs INTER_AREA as bilinear, so bilinear is what is asked for.
    Outside the image is black (a constant border of 0, warpAffine's default).
    """
    shrinking = min(affine[0, 0], affine[1, 1]) < 1
    flags = cv2.INTER_LINEAR if shrinking else cv2.INTER_CUBIC
    return cv2.warpAffine(image, affine, (size[1], size[0]), flags=flags)


def box_key(image: str, box_id: int) -> str:
    """A crop's key: the image's path and 'box=ID' (`items.derived_key`; `split_key` reads it)."""
    return derived_key(image, f"box={box_id}")


@dataclass(frozen=True)
class CropReader(Reader):
    """Decodes an image once and crops every box of it (the items' locators)."""

    padding: float = DEFAULT_PADDING
    chunk_rows = None  # all boxes of an image in one call: one decode

    def read(self, items: Sequence[Item], prep: Preprocess) -> Iterator[Row | Failure]:
        try:
            image = read_rgb(items[0].file)
        except ImageError as e:  # the image fails every box, each keeping its own record
            for item in items:
                yield Failure(item.key, str(e))
            return
        original = np.asarray(image.shape[:2], np.int32)
        for item in items:
            try:
                crop = crop_box(image, item.locator, prep.size, self.padding)
            except ImageError as e:
                yield Failure(item.key, str(e))
                continue
            columns = {**item.columns, "original_size": original, "crop_affine": crop.affine}
            yield Row(item.key, crop.pixels, columns)


class BoxSource(Source):
    """The images of a box file, one item per box; replaces the image source under --boxes.

    The box file names the images (relative to the one image folder given), so the folder
    is not walked: an image without boxes gives no row, and an image named but missing
    gives a "file not found" failure for each of its boxes.
    """

    def __init__(self, boxes: BoxFile, sha256: str, padding: float) -> None:
        self.boxes, self.sha256, self.padding = boxes, sha256, padding
        self._by_file: dict[str, list[Box]] = {}
        for path, image_boxes in boxes.images.items():
            self._by_file.setdefault(identity(path), []).extend(image_boxes)

    @property
    def files(self) -> list[str]:
        """The images to process, as identities (resolved paths), in the box file's order."""
        return list(self._by_file)

    def claims(self, path: str) -> bool:
        return True

    def expand(self, files: Sequence[str]) -> Expansion:
        reader = CropReader(self.padding)
        items = []
        for file in files:
            for box in self._by_file.get(file, ()):
                columns = {
                    "boxes": box.xywh(),
                    "box_ids": np.asarray(box.box_id, np.int64),
                    "box_scores": np.asarray(box.score, np.float32),
                }
                items.append(Item(box_key(file, box.box_id), file, reader, box, columns))
        return Expansion(items)

    def settings(self) -> dict[str, object]:
        return {
            "boxes": Path(self.boxes.path).name,
            "boxes_sha256": self.sha256,
            "box_padding": self.padding,
        }


def load_box_source(
    box_file: str | Path,
    inputs: Sequence[str],
    padding: float = DEFAULT_PADDING,
    min_score: float | None = None,
    include_crowd: bool = False,
) -> BoxSource:
    """The box file read against the image folder (the one INPUT); raises Sapiens2Error."""
    if len(inputs) != 1 or not (is_url(inputs[0]) or os.path.isdir(inputs[0])):
        raise Sapiens2Error(
            "--boxes takes its images from the box file: give the one folder its image "
            f"names are relative to as INPUT (got {' '.join(inputs) or 'none'})"
        )
    if not (math.isfinite(padding) and padding > 0):
        raise Sapiens2Error(f"--box-padding {padding} must be a positive number, like 1.25")
    boxes = load_boxes(box_file, inputs[0], min_score, include_crowd)
    return BoxSource(boxes, file_sha256(box_file), padding)
