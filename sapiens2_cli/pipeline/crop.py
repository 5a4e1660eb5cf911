"""One person box -> the model's H x W input, cropped exactly as upstream's pose pipeline does.

Upstream's test-time transform (`PoseGetBBoxCenterScale` then `PoseTopdownAffine` with
`use_udp=True`; written out in ../shared/TOPDOWN_CROP.md): the box's center and padded
scale, the scale's aspect fixed to the input's W:H, the UDP affine matrix, and
`cv2.warpAffine` to exactly H x W, bilinear when shrinking and bicubic when enlarging,
black outside the image. The same OpenCV call makes the same pixels; the arithmetic is
done in float32, as upstream's (its boxes are float32 arrays), so the matrix matches too.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PIL import ExifTags, Image

from sapiens2_cli.pipeline.boxes import Box, box_problem
from sapiens2_cli.pipeline.decode import ImageError, decode_image

#: Upstream's default padding around a box (`PoseGetBBoxCenterScale(padding=1.25)`).
DEFAULT_PADDING = 1.25


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

    The box must be usable (`box_problem`); the reason it is not is the error's message.
    """
    problem = box_problem(box, image.shape[:2])
    if problem:
        raise ImageError(problem)
    center, scale = center_scale(box, size, padding)
    affine = udp_affine(center, scale, size)
    # upstream passes INTER_AREA when shrinking, which warpAffine runs as bilinear
    shrinking = min(affine[0, 0], affine[1, 1]) < 1
    flags = cv2.INTER_LINEAR if shrinking else cv2.INTER_CUBIC
    pixels = cv2.warpAffine(image, affine, (size[1], size[0]), flags=flags)
    return Crop(pixels, affine)


def read_rgb(path: str) -> np.ndarray:
    """The whole image as (h, w, 3) uint8 RGB after EXIF orientation; raises ImageError.

    `decode_image` at the image's own size, which it leaves unresampled: the same opening,
    orientation, mode conversion, bomb check and one-line reasons as whole-image rows.
    """
    size = _oriented_size(path)
    decoded = decode_image(path, size)
    if decoded.original_size != size:  # the header's guess was wrong: decode at the truth
        decoded = decode_image(path, decoded.original_size)
    return decoded.pixels


def _oriented_size(path: str) -> tuple[int, int]:
    """(height, width) after EXIF orientation from the header, or (1, 1) if unreadable."""
    try:
        with Image.open(path) as im:
            width, height = im.size
            if im.getexif().get(ExifTags.Base.Orientation) in (5, 6, 7, 8):  # 90-degree turns
                width, height = height, width
            return height, width
    except Exception:  # decode_image meets the same problem and names it
        return 1, 1
