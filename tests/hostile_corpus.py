"""A folder of real photos plus every kind of awkward file extract must survive."""

from __future__ import annotations

import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
from paths import DATA
from PIL import Image


def huge_png_header() -> bytes:
    """A valid PNG signature and IHDR claiming 100000 x 100000 pixels, then nothing real."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def make_corpus(root: Path) -> tuple[dict[str, tuple[int, int]], dict[str, str]]:
    """Fill `root`; return {good path: (height, width) after EXIF}, {bad path: reason part}."""
    root.mkdir(parents=True, exist_ok=True)
    photo = Image.open(DATA / "chelsea.jpg").convert("RGB")  # 180 x 120
    good: dict[str, tuple[int, int]] = {}
    bad: dict[str, str] = {}

    def add(name: str, image: Image.Image, size: tuple[int, int] | None = None, **kw) -> None:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, **kw)
        good[str(path)] = size or (image.height, image.width)

    for name in ("astronaut.png", "coffee.jpg", "hubble_deep_field.jpg"):
        shutil.copy(DATA / name, root / name)
        with Image.open(DATA / name) as im:
            good[str(root / name)] = (im.height, im.width)
    rgba = photo.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(photo.size))
    add("modes/rgba.png", rgba)
    add("modes/grey.png", photo.convert("L"))
    grey16 = (np.asarray(photo.convert("L"), np.uint16) * 257).astype(np.uint16)
    add("modes/grey16.png", Image.fromarray(grey16))
    add("modes/grey16.tif", Image.fromarray(grey16))
    add("modes/cmyk.jpg", photo.convert("CMYK"))
    add("modes/palette.gif", photo.convert("P", palette=Image.Palette.ADAPTIVE))
    add("modes/photo.tiff", photo)
    add("modes/photo.webp", photo, quality=90)
    add("modes/UPPER.JPG", photo)
    exif = Image.Exif()
    exif[274] = 6  # rotate 90 degrees clockwise to display
    add("exif/rotated.jpg", photo, size=(photo.width, photo.height), exif=exif)
    add("unicode/café_日本 photo.png", photo)
    add("dup/a/same.png", photo.crop((0, 0, 90, 60)))
    add("dup/b/same.png", photo.crop((90, 60, 180, 120)))

    truncated = (DATA / "coffee.jpg").read_bytes()
    (root / "bad").mkdir()
    (root / "bad/truncated.jpg").write_bytes(truncated[: len(truncated) // 2])
    bad[str(root / "bad/truncated.jpg")] = "truncated"
    (root / "bad/empty.jpg").write_bytes(b"")
    bad[str(root / "bad/empty.jpg")] = "empty file"
    (root / "bad/text.jpg").write_text("this is not a picture\n")
    bad[str(root / "bad/text.jpg")] = "not an image"
    (root / "bad/bomb.png").write_bytes(huge_png_header())
    bad[str(root / "bad/bomb.png")] = "decompression bomb"
    (root / "notes.txt").write_text("not picked up: not an image extension\n")
    return good, bad
