"""Inputs in an S3 bucket against the same images as local files, on a local moto server.

Starts moto in server mode on 127.0.0.1 (tests/s3_server.py) and measures, in one process:

* listing: `--objects` tiny objects put under one prefix (by `--threads` boto3 threads, for
  at most `--create-seconds`: the objects made in that time are the ones listed), then
  the pipeline's listing of the prefix (`sources.list_files`, one paginated listing);
* reading: `--count` photo-like JPEGs (`make_bench_images.py`) uploaded, then read through
  the pipeline's image reader (what a decode worker runs: fetch, decode, resize to
  `--size`) from the bucket and from the local copies, alternating `--repeats` times;
  MB/s is JPEG bytes over wall-clock seconds, beside the bytes alone (no decode).

    python scripts/bench_object_store.py --objects 100000 --count 256 --repeats 3 [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from make_bench_images import make_images
from s3_server import CREDENTIALS, moto_server

from sapiens2_cli.config.values import parse_size
from sapiens2_cli.engine.loader import work_units
from sapiens2_cli.inputs.items import Preprocess, Row
from sapiens2_cli.inputs.sources import ImageSource, list_files
from sapiens2_cli.remote import read_bytes

BUCKET = "bench"


def put_many(client, count: int, threads: int, budget: float) -> int:
    """Put up to `count` 1-byte objects in `budget` seconds; how many were made."""
    deadline = time.monotonic() + budget

    def put(i: int) -> bool:
        if time.monotonic() > deadline:
            return False
        client.put_object(Bucket=BUCKET, Key=f"many/{i // 1000:03d}/{i:06d}.jpg", Body=b"x")
        return True

    with ThreadPoolExecutor(threads) as pool:
        return sum(pool.map(put, range(count)))


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def read_all(items, prep: Preprocess) -> None:
    for unit in work_units(items, 64):
        rows = list(unit[0].reader.read(unit, prep))
        assert all(isinstance(r, Row) for r in rows), rows


def fetch_all(paths: list[str]) -> None:
    for path in paths:
        if path.startswith("s3://"):
            read_bytes(path)
        else:
            Path(path).read_bytes()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--create-seconds", type=float, default=120)
    parser.add_argument("--count", type=int, default=256)
    parser.add_argument("--image", default="480x640", help="HxW of the JPEGs")
    parser.add_argument("--size", default="1024x768", help="HxW the model gets")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="on one line")
    args = parser.parse_args()
    prep = Preprocess(parse_size(args.size))
    with moto_server() as endpoint, tempfile.TemporaryDirectory() as tmp:
        os.environ.update(CREDENTIALS, AWS_ENDPOINT_URL=endpoint)
        import boto3

        client = boto3.client("s3")
        client.create_bucket(Bucket=BUCKET)
        made: list[int] = []
        create_s = timed(
            lambda: made.append(put_many(client, args.objects, args.threads, args.create_seconds))
        )
        made = made[0]
        listed: list[str] = []
        list_s = timed(lambda: listed.extend(list_files([f"s3://{BUCKET}/many/"])))
        assert len(listed) == made, (len(listed), made)
        image = parse_size(args.image)
        images = make_images(Path(tmp) / "loose", args.count, image)
        for path in images:
            client.upload_file(str(path), BUCKET, f"photos/{path.name}")
        paths = {
            "local files": [str(p) for p in images],
            "s3 (moto)": [f"s3://{BUCKET}/photos/{p.name}" for p in images],
        }
        megabytes = sum(p.stat().st_size for p in images) / 1e6
        spent = {name: [0.0, 0.0] for name in paths}
        for _ in range(args.repeats):
            for name, files in paths.items():
                spent[name][0] += timed(lambda f=files: fetch_all(f))
                items = ImageSource().expand(files).items
                spent[name][1] += timed(lambda i=items: read_all(i, prep))
    report = {
        "listing": {
            "objects": made,
            "create_seconds": create_s,
            "seconds": list_s,
            "objects_per_s": made / list_s,
        },
        "reading": {
            name: {
                "images": args.count,
                "megabytes": megabytes,
                "bytes_mb_per_s": megabytes * args.repeats / fetch_s,
                "reader_mb_per_s": megabytes * args.repeats / read_s,
                "reader_images_per_s": args.count * args.repeats / read_s,
            }
            for name, (fetch_s, read_s) in spent.items()
        },
    }
    print(json.dumps(report, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
