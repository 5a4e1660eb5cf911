"""Both writers against a plain sequential write of the same bytes, in one run.

Why: at 1b a row is 3,072 patch tokens x 1,536 x 2 B = 9.4 MB, and one GPU at 60
images/s must write 566 MB/s, so a writer must keep up with the disk. This writes 1b-shaped
rows (random float16, one `original_size` column, in batches as `extract` hands them over)
with the HDF5 writer, the npy writer and, as the yardstick, a plain `write` of the same
batches to one file followed by one fsync (what `dd bs=16M conv=fdatasync` does). Each is
timed from opening to a closed, durable file; the methods take turns within each repeat
and every output is kept until the run ends (see `timed`). The ratio is the writer's rate over the
plain write's rate in the same repeat. The first repeat ran slow for every method on
this VM's disk: use --repeats 3 or more and the medians. Run it on the disk you will
write to (`--dir`).

    python scripts/bench_writers.py --dir /work --gb 3 [--repeats 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from sapiens2_cli.output import RowBatch, open_writer

SETTINGS = {  # what a 1b extract at 1024x768 records; the writers only store it
    **{"arch": "1b", "checkpoint_sha256": "0" * 64, "embed_dim": 1536, "layers": [-1]},
    **{"image_size": [1024, 768], "grid_size": [64, 48], "resize": "letterbox"},
    **{"tokens": "patch", "layout": "tokens", "dtype": "float16", "precision": "bf16"},
    **{"format_version": 1, "complete": False},
}
METHODS = ("plain", "h5", "npy")
NAMES = {"plain": "plain.bin", "h5": "feats.h5", "npy": "feats"}


def random_batches(row_shape: tuple[int, ...], batch: int) -> list[np.ndarray]:
    """Two batches of random float16 rows, made before any timing (random bytes, so nothing
    on the way can compress them; two, taken in turn, so no 3 GB are held in memory)."""
    rng = np.random.default_rng(0)
    return [rng.standard_normal((batch, *row_shape), np.float32).astype(np.float16) for _ in "ab"]


def batches(pool: list[np.ndarray], rows: int) -> Iterator[RowBatch]:
    """`rows` rows in batches as large as the pool's, as `extract` hands them over."""
    batch = len(pool[0])
    for start in range(0, rows, batch):
        k = min(batch, rows - start)
        yield RowBatch(
            [f"bench/{i:08d}.jpg" for i in range(start, start + k)],
            pool[(start // batch) % 2][:k],
            {"original_size": np.full((k, 2), (1024, 768), np.int32)},
        )


def plain_write(path: Path, source: Iterator[RowBatch]) -> None:
    """The yardstick: the features' bytes appended to one file, one fsync at the end."""
    with open(path, "wb") as f:
        for rows in source:
            f.write(rows.features.data)
        f.flush()
        os.fsync(f.fileno())


def writer_write(path: Path, fmt: str, source: Iterator[RowBatch], row_shape) -> None:
    writer, _ = open_writer(path, fmt, SETTINGS, row_shape, np.float16, overwrite=True)
    for rows in source:
        writer.write(rows)
    writer.close(complete=True)


def timed(method: str, out: Path, source: Iterator[RowBatch], row_shape) -> float:
    """Seconds `method` takes to make `source` durable at `out`.

    Outputs stay until the whole run is over: deleting gigabytes on a filesystem mounted
    with online discard (ext4 `-o discard`, as on the 2-core VMs) sends TRIMs that slow the
    next method's writes, which made every other run about half as fast."""
    start = time.perf_counter()
    if method == "plain":
        plain_write(out, source)
    else:
        writer_write(out, method, source, row_shape)
    return time.perf_counter() - start


def measure(args: argparse.Namespace) -> dict:
    row_shape = tuple(int(n) for n in args.row_shape.split(","))
    row_bytes = math.prod(row_shape) * 2
    rows = args.batch * math.ceil(args.gb * 1e9 / row_bytes / args.batch)
    gigabytes = rows * row_bytes / 1e9
    runs: dict[str, list[float]] = {m: [] for m in METHODS}
    pool = random_batches(row_shape, args.batch)
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench-writers-") as tmp:
        need = gigabytes * 1e9 * len(METHODS) * args.repeats * 1.05
        if shutil.disk_usage(tmp).free < need:
            raise SystemExit(f"{tmp}: needs {need / 1e9:.1f} GB free (every output is kept)")
        for repeat in range(args.repeats):
            for method in METHODS:
                out = Path(tmp) / f"{repeat}-{NAMES[method]}"
                source = batches(pool, rows)
                runs[method].append(gigabytes / timed(method, out, source, row_shape))
    ratios = {
        m: [rate / plain for rate, plain in zip(runs[m], runs["plain"], strict=True)]
        for m in METHODS[1:]
    }
    return {
        "row_shape": list(row_shape),
        "batch": args.batch,
        "rows": rows,
        "gigabytes": gigabytes,
        "repeats": args.repeats,
        "gb_per_s": runs,
        "ratio": ratios,
        "median_ratio": {m: statistics.median(r) for m, r in ratios.items()},
        "dir": str(args.dir or tempfile.gettempdir()),
        "machine": f"{platform.node()}, {os.cpu_count()} CPUs, {platform.platform()}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=3.0, help="features written per method")
    parser.add_argument("--batch", type=int, default=16, help="rows per write")
    parser.add_argument("--row-shape", default="1,3072,1536", help="1b's patch tokens")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--dir", type=Path, default=None, help="where to write (a temp dir)")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args()
    report = measure(args)
    if args.json:
        print(json.dumps(report))
        return
    print(f"{report['rows']} rows of {report['row_shape']} float16 ({report['gigabytes']:.2f} GB)")
    print(f"{'method':<7} {'GB/s per repeat':<30} {'ratio to plain (median)':>24}")
    for method in METHODS:
        rates = " ".join(f"{r:.2f}" for r in report["gb_per_s"][method])
        ratio = report["median_ratio"].get(method, 1.0)
        print(f"{method:<7} {rates:<30} {ratio:>24.2f}")


if __name__ == "__main__":
    main()
