"""A folder of photo-like JPEGs for benchmarks, made from the test photos (no download).

Each image is a random crop of one of `tests/data`'s photographs, randomly mirrored,
resized to W x H (bicubic), given mild grain (sigma 4 grey levels, as sensor noise) and
saved as a quality-90 JPEG. The photos are small, so the enlarged crops have less fine
detail than camera photos and decode somewhat faster: for figures that matter, point the
benchmarks at real photos of the size you use. Seeded: the same command makes the same
files.

    python scripts/make_bench_images.py /tmp/jpeg_1024x768 --count 512 --size 1024x768
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"


def make_images(folder: Path, count: int, size: tuple[int, int], seed: int = 0) -> list[Path]:
    """Write `count` JPEGs of (H, W) = `size` into `folder`; returns their paths."""
    rng = np.random.default_rng(seed)
    photos = [Image.open(p).convert("RGB") for p in sorted(DATA.glob("*.[jp][pn]g"))]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        photo = photos[i % len(photos)]
        w, h = photo.size
        cw, ch = int(w * rng.uniform(0.6, 1)), int(h * rng.uniform(0.6, 1))
        left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        image = photo.crop((left, top, left + cw, top + ch))
        if rng.random() < 0.5:
            image = ImageOps.mirror(image)
        image = image.resize((size[1], size[0]), Image.Resampling.BICUBIC)
        grain = rng.normal(0, 4, (*size, 3))
        image = Image.fromarray(np.clip(np.asarray(image) + grain, 0, 255).astype(np.uint8))
        path = folder / f"{i:06d}.jpg"
        image.save(path, quality=90)
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--count", type=int, default=512)
    parser.add_argument("--size", default="1024x768", help="HxW")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.lower().split("x"))
    make_images(args.folder, args.count, (height, width), args.seed)


if __name__ == "__main__":
    main()
