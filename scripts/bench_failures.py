"""Time the writers on many failure records and many tiny rows, both formats.

Why: HDF5 once rewrote every failure record on every batch (20,000 failures took 38 s,
40,000 took 124 s). Appending must cost the same at the last record as at the first, so
this prints the time of the first and the last tenth of the records beside the total.

    python scripts/bench_failures.py [--records 100000] [--batch 32] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from sapiens2_cli.output import RowBatch, open_features, open_writer

SETTINGS = {
    "arch": "custom",
    "checkpoint_sha256": "0" * 64,
    "image_size": [16, 16],
    "grid_size": [1, 1],
    "embed_dim": 8,
    "resize": "stretch",
    "layers": [0],
    "tokens": "cls",
    "layout": "tokens",
    "dtype": "float16",
    "precision": "fp32",
    "format_version": 1,
    "complete": False,
}
ROW = (1, 8)  # one layer, D = 8: a tiny row


def failures(start: int, k: int) -> RowBatch:
    reasons = [
        (f"photos/{i:07d}.jpg", "truncated or corrupt image") for i in range(start, start + k)
    ]
    return RowBatch([], None, failures=reasons)


def rows(start: int, k: int) -> RowBatch:
    return RowBatch(
        [f"photos/{i:07d}.jpg" for i in range(start, start + k)],
        np.full((k, *ROW), 1.0, np.float16),
        {"original_size": np.full((k, 2), 480, np.int32)},
    )


def run(out: Path, fmt: str, make, records: int, batch: int) -> tuple[float, float, float, float]:
    """Total seconds, seconds for the first and last tenth of the batches, and for close."""
    writer, _ = open_writer(out, fmt, SETTINGS, ROW, np.float16)
    starts = range(0, records, batch)
    tenth = max(1, len(starts) // 10)
    times = []
    begin = time.perf_counter()
    for start in starts:
        t = time.perf_counter()
        writer.write(make(start, min(batch, records - start)))
        times.append(time.perf_counter() - t)
    t = time.perf_counter()
    writer.close(complete=True)
    closing = time.perf_counter() - t
    total = time.perf_counter() - begin
    with open_features(out) as f:
        assert len(f) + len(f.failed) == records
    return total, sum(times[:tenth]), sum(times[-tenth:]), closing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=32, help="records per write")
    parser.add_argument("--dir", type=Path, default=None, help="where to write (a temp dir)")
    args = parser.parse_args()
    print(f"{platform.node()}, {args.records} records in writes of {args.batch}")
    print(
        f"{'what':<10} {'format':<6} {'total s':>8} {'first 10%':>10} {'last 10%':>9} {'close':>7}"
    )
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for what, make in (("failures", failures), ("tiny rows", rows)):
            for fmt in ("h5", "npy"):
                out = Path(tmp) / f"{what.replace(' ', '_')}.{fmt}"
                total, first, last, closing = run(out, fmt, make, args.records, args.batch)
                print(
                    f"{what:<10} {fmt:<6} {total:8.2f} {first:10.2f} {last:9.2f} {closing:7.2f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
