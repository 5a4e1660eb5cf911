"""One image file -> (H, W, 3) uint8 RGB at the model's input size, or a one-line reason.

Runs in decode worker processes. Every step is fixed and documented (docs/cli.md#extract):

* EXIF orientation is applied first; `original_size` is (height, width) after it.
* Modes become 8-bit RGB: 16-bit greyscale is scaled by 255/65535 (not clipped); alpha is
  composited onto the mean colour, so transparent areas normalize to zero, like letterbox
  padding; CMYK, palette, YCbCr and the rest use Pillow's conversion; float images are
  refused. Multi-frame files (GIF, TIFF) give their first frame.
* Resizing averages areas when shrinking (Pillow BOX, as OpenCV INTER_AREA) and is bicubic
  when enlarging, decided per axis.
* JPEGs are decoded at full scale unless `draft=True` (extract's `--jpeg-draft`, settings
  key `jpeg_draft`; off by default): then libjpeg's DCT scaling (Pillow `Image.draft`)
  decodes at 1/2, 1/4 or 1/8 scale, the smallest one still at least twice the resize
  target on both axes, before the same resize. It is several times faster on large photos,
  and changes pixels by a few grey levels after the resize (docs/performance.md has the
  figures), so the features are close to, not equal to, the full decode's.
* Decompression bombs (a header claiming more than MAX_PIXELS) are refused before decoding.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from sapiens2_cli.config.choices import ResizeMode
from sapiens2_cli.model import PIXEL_MEAN
from sapiens2_cli.remote import is_url, read_bytes
from sapiens2_cli.text import one_line, open_failure

#: Largest image accepted, in pixels: the point where Pillow itself refuses to open a file
#: (twice its warning limit, 178,956,970 by default, about 13k x 13k), so one limit holds
#: whichever check meets the file first.
MAX_PIXELS = 2 * Image.MAX_IMAGE_PIXELS
#: Letterbox padding and the colour alpha is composited onto: the mean, which normalizes to 0.
FILL = tuple(round(m) for m in PIXEL_MEAN)
_ALPHA_MODES = {"RGBA", "LA", "La", "RGBa", "PA"}
_GREY16_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}
ORIENTATION_TAG = 0x0112
#: EXIF orientations that turn the image a quarter turn, swapping width and height.
_TURNING_ORIENTATIONS = {5, 6, 7, 8}


class ImageError(Exception):
    """An image that cannot be used; the message is the one-line reason recorded."""


@dataclass
class Decoded:
    pixels: np.ndarray  # (H, W, 3) uint8, RGB
    original_size: tuple[int, int]  # (height, width) after EXIF orientation
    content_box: tuple[int, int, int, int] | None  # (top, left, height, width); letterbox only


def decode_image(
    source: str | bytes,
    size: tuple[int, int],
    resize: ResizeMode = ResizeMode.STRETCH,
    draft: bool = False,
) -> Decoded:
    """Read `source` (a path or URL, or an image file's bytes such as a tar member) and make it
    the model's (H, W) = `size` input; raises ImageError.

    `draft`: decode JPEGs at a reduced DCT scale (module docstring); off by default.
    """
    with _reasons():
        rgb, original = _upright(source, (size, resize) if draft else None)
        return fit(rgb, size, resize, original)


def read_rgb(source: str | bytes) -> np.ndarray:
    """The whole image as (h, w, 3) uint8 RGB after EXIF orientation, unresampled (what a
    person crop is cut from); the same steps and reasons as `decode_image`."""
    with _reasons():
        return np.asarray(_upright(source, None)[0])


@contextlib.contextmanager
def _reasons() -> Iterator[None]:
    """Any failure to read an image as an ImageError with its one-line reason."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's warnings on odd files are not news
            yield
    except ImageError:
        raise
    except (FileNotFoundError, IsADirectoryError, PermissionError) as e:
        raise ImageError(open_failure(e, "an image file")) from None
    except UnidentifiedImageError:
        raise ImageError("not an image, or a format Pillow cannot read") from None
    except Image.DecompressionBombError as e:
        raise ImageError(f"decompression bomb refused: {one_line(e)}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageError(f"truncated or corrupt image: {one_line(e)}") from None
    except MemoryError:
        raise ImageError("out of memory while decoding") from None


def _upright(
    source: str | bytes, draft_for: tuple[tuple[int, int], ResizeMode] | None
) -> tuple[Image.Image, tuple[int, int]]:
    """The image upright in 8-bit RGB, and its (height, width) once upright (the header's:
    `draft_for` = (size, resize) decodes a JPEG smaller, at least twice what that resize
    keeps of it)."""
    if isinstance(source, str) and is_url(source):
        source = _fetch(source)
    if isinstance(source, bytes):
        if not source:
            raise ImageError("empty file (0 bytes)")
        source = io.BytesIO(source)
    elif os.path.isfile(source) and os.path.getsize(source) == 0:
        raise ImageError("empty file (0 bytes)")
    with Image.open(source) as im:
        w0, h0 = im.size
        if w0 * h0 > MAX_PIXELS:
            raise ImageError(
                f"decompression bomb refused: header claims {w0}x{h0} pixels, "
                f"more than the limit of {MAX_PIXELS:,}"
            )
        im.seek(0)
        turned = im.getexif().get(ORIENTATION_TAG) in _TURNING_ORIENTATIONS
        original = (w0, h0) if turned else (h0, w0)  # (height, width) once upright
        if draft_for is not None:  # Pillow keeps each axis at least the size asked for
            size, resize = draft_for
            h, w = size if resize == "stretch" else _content_size(original, size)
            im.draft(None, (2 * h, 2 * w) if turned else (2 * w, 2 * h))
        oriented = ImageOps.exif_transpose(im)  # loads the pixels
    return to_rgb(oriented), original


def _fetch(url: str) -> bytes:
    """An image object's bytes, in one request; a store that cannot be reached is the
    image's failure, as a missing or forbidden one is (`_reasons`)."""
    try:
        return read_bytes(url)
    except (FileNotFoundError, PermissionError):
        raise
    except Exception as e:  # botocore's, aiohttp's: not OSErrors, nor about the image
        raise ImageError(f"cannot read {url}: {one_line(e)}") from None


def fit(
    rgb: Image.Image,
    size: tuple[int, int],
    resize: ResizeMode,
    original: tuple[int, int] | None = None,
) -> Decoded:
    """An upright RGB image (a photo, a video frame) -> the model's (H, W) input: resized,
    and letterboxed onto the mean colour when asked. `original` is the (height, width) to
    record and letterbox by, when `rgb` was decoded smaller (--jpeg-draft)."""
    height, width = size
    original = original or (rgb.height, rgb.width)
    h, w = (height, width) if resize == "stretch" else _content_size(original, size)
    resized = resize_to(rgb, w, h)
    if resize == "stretch":
        return Decoded(np.asarray(resized), original, None)
    top, left = (height - h) // 2, (width - w) // 2
    canvas = Image.new("RGB", (width, height), FILL)
    canvas.paste(resized, (left, top))
    return Decoded(np.asarray(canvas), original, (top, left, h, w))


def _content_size(original: tuple[int, int], size: tuple[int, int]) -> tuple[int, int]:
    """(h, w) of an image of (height, width) `original` letterboxed into `size`."""
    scale = min(size[0] / original[0], size[1] / original[1])
    h = min(size[0], max(1, round(original[0] * scale)))
    w = min(size[1], max(1, round(original[1] * scale)))
    return h, w


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB, as the module docstring says."""
    if im.mode == "RGB":
        return im
    if im.mode == "F":
        raise ImageError("32-bit float images are not supported: convert to 8 or 16 bits")
    if im.mode in _GREY16_MODES:
        grey = np.rint(np.asarray(im, dtype=np.float64) * (255 / 65535)).clip(0, 255)
        return Image.fromarray(grey.astype(np.uint8)).convert("RGB")
    if im.mode in _ALPHA_MODES or "transparency" in im.info:
        rgba = im.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, FILL)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return im.convert("RGB")


def resize_to(im: Image.Image, width: int, height: int) -> Image.Image:
    """Area-average along an axis that shrinks, bicubic along one that grows."""
    if im.width != width:
        im = im.resize((width, im.height), _filter(im.width, width))
    if im.height != height:
        im = im.resize((width, height), _filter(im.height, height))
    return im


def _filter(old: int, new: int) -> Image.Resampling:
    return Image.Resampling.BOX if new < old else Image.Resampling.BICUBIC
