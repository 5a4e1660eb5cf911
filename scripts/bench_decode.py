"""Decode throughput per core: images decoded and resized to the model input per second.

Makes photo-like test images of typical sizes from the photos in tests/data
(`scripts/make_bench_images.py`: random crops, enlarged, with grain; JPEG quality 90, and
the same pixels as PNG), then times `decode_image` (the decode and resize extract's
workers run) in one process, one image at a time. Rates come from the process's CPU time,
so they are per core and hold up on a shared machine; wall-clock rates are given beside
them. For JPEGs it also times the reduced-scale decode (`draft=True`) and compares it
with the full one: max and mean absolute pixel difference after the resize, and the
per-image cosine of the patch features from the tests' tiny golden weights.

    python scripts/bench_decode.py --count 8 --size 1024x768 [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from sapiens2_cli.inputs.decode import decode_image
from sapiens2_cli.model import load_backbone, normalize_pixels

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "golden" / "tiny_weights.safetensors"
#: (label, (H, W) of the image, format)
IMAGES = [
    ("640x480 JPEG", (480, 640), "jpg"),
    ("1920x1080 JPEG", (1080, 1920), "jpg"),
    ("4000x3000 JPEG", (3000, 4000), "jpg"),
    ("3072x4096 JPEG (portrait)", (4096, 3072), "jpg"),
    ("1920x1080 PNG", (1080, 1920), "png"),
]


def make(folder: Path, shape: tuple[int, int], fmt: str, count: int) -> list[str]:
    sys.path.insert(0, str(REPO / "scripts"))
    from make_bench_images import make_images

    paths = make_images(folder, count, shape)
    if fmt == "png":
        for p in paths:
            Image.open(p).save(p.with_suffix(".png"))
        paths = [p.with_suffix(".png") for p in paths]
    return [str(p) for p in paths]


def rate(paths: list[str], size: tuple[int, int], draft: bool, repeats: int) -> dict:
    decode_image(paths[0], size, draft=draft)  # warm-up
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(repeats):
        for p in paths:
            decode_image(p, size, draft=draft)
    n = repeats * len(paths)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {
        "images_per_s_per_core": round(n / cpu, 1),
        "ms_per_image_cpu": round(1000 * cpu / n, 1),
        "images_per_s_wall": round(n / wall, 1),
    }


def difference(paths: list[str], size: tuple[int, int], model) -> dict:
    """Full against draft decode: pixels after the resize, and tiny-model patch features."""
    full = np.stack([decode_image(p, size).pixels for p in paths]).astype(np.int16)
    drafted = np.stack([decode_image(p, size, draft=True).pixels for p in paths])
    delta = np.abs(full - drafted)
    with torch.inference_mode():
        feats = [
            model(normalize_pixels(torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2)))
            for x in (full, drafted)
        ]
    prefix = model.config.num_prefix_tokens
    a, b = (f[:, prefix:].flatten(1) for f in feats)
    return {
        "max_abs_pixel": int(delta.max()),
        "mean_abs_pixel": round(float(delta.mean()), 3),
        "feature_cosine_min": round(F.cosine_similarity(a, b, dim=1).min().item(), 6),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=8, help="images of each kind")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--size", default="1024x768", help="model input HxW")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.lower().split("x"))
    torch.set_num_threads(1)
    model = load_backbone(TINY)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, shape, fmt in IMAGES:
            paths = make(Path(tmp) / label.replace(" ", "_"), shape, fmt, args.count)
            row = {"full": rate(paths, size, False, args.repeats)}
            if fmt == "jpg":
                with Image.open(paths[0]) as im:
                    im.draft(None, (2 * size[1], 2 * size[0]))
                    row["draft_decoded_wh"] = list(im.size)
                row["draft"] = rate(paths, size, True, args.repeats)
                row["draft_speedup"] = round(
                    row["full"]["ms_per_image_cpu"] / row["draft"]["ms_per_image_cpu"], 2
                )
                row["draft_vs_full"] = difference(paths, size, model)
            results[label] = row
            print(label, json.dumps(row), file=sys.stderr)
    report = {"size": list(size), "count": args.count, "repeats": args.repeats, "results": results}
    print(json.dumps(report, indent=2) if args.json else json.dumps(results))


if __name__ == "__main__":
    main()
