"""The same extract job with the local engine and with `--engine ray`, in one run on this
machine: random 0.1b weights, generated JPEGs, one HDF5 output each; prints images/s of
both and their ratio (Ray / local; the goal is >= 0.8: the engine's overhead is bounded).

Ray's instance is started first and timed apart (a cluster is up before a job), so the
ratio is the engine's cost per job: tasks, the object store, actor start and model load in
the actor, the driver's commits. The local run loads its model inside its timing too.

    python scripts/bench_ray.py --images 64 --size 256x192 [--device cpu] [--json]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from sapiens2_cli import extract, get_config
from sapiens2_cli.bench.pipeline import random_checkpoint
from sapiens2_cli.config.values import parse_size
from sapiens2_cli.system import usable_cores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--size", default="256x192")
    parser.add_argument("--arch", default="0.1b")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    import ray

    with tempfile.TemporaryDirectory(prefix="sapiens2-bench-ray-") as tmp:
        folder = Path(tmp) / "in"
        folder.mkdir()
        rng = np.random.default_rng(0)
        for i in range(args.images):
            pixels = rng.integers(0, 256, (768, 1024, 3), np.uint8)
            Image.fromarray(pixels).save(folder / f"{i:05d}.jpg", quality=90)
        start = time.perf_counter()
        ray.init(num_cpus=usable_cores(), include_dashboard=False, logging_level=logging.ERROR)
        ray_start_s = time.perf_counter() - start
        report = {"images": args.images, "size": args.size, "arch": args.arch}
        with random_checkpoint(get_config(args.arch)) as checkpoint:
            common = dict(checkpoint=checkpoint, size=parse_size(args.size),
                          device=args.device, batch_size=args.batch_size)  # fmt: skip
            for engine in ("local", "ray"):
                summary = extract([folder], Path(tmp) / f"{engine}.h5", engine=engine, **common)
                assert summary.images == args.images and summary.complete
                report[f"{engine}_images_per_s"] = round(summary.images_per_s, 3)
        ray.shutdown()
    report["ray_start_s"] = round(ray_start_s, 2)
    report["ratio"] = round(report["ray_images_per_s"] / report["local_images_per_s"], 3)
    if args.json:
        print(json.dumps(report))
        return
    print(
        f"local {report['local_images_per_s']:.2f} images/s, ray "
        f"{report['ray_images_per_s']:.2f} images/s: ratio {report['ratio']:.2f} "
        f"({args.images} images, {args.arch} random weights, {args.size}; Ray started in "
        f"{ray_start_s:.1f} s, not counted)"
    )


if __name__ == "__main__":
    main()
