"""How `extract` scales with the number of inputs, apart from the model: 100,000 inputs.

Three timings, each through the library's `extract` (the same job as the CLI), with the
tests' tiny checkpoint:

1. listing: a folder of N empty `.jpg` files walked (`list_files`), no decoding;
2. failure records: N listed paths that do not exist (`--files-from`), so every input
   becomes a failure record: the cost of recording failures, batch after batch;
3. resume with nothing to do: the same command again with `--skip-failed`, so the run
   lists, opens OUT, reads its N records and finds nothing pending.

Run from the repository root:

    python scripts/bench_many_inputs.py --inputs 100000 --format h5
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from sapiens2_cli.inputs.sources import list_files
from sapiens2_cli.scaleout.launch import extract

TINY = Path(__file__).parents[1] / "tests" / "golden" / "tiny_weights.safetensors"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=100_000)
    parser.add_argument("--format", choices=("h5", "npy"), default="h5")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    n = args.inputs
    with tempfile.TemporaryDirectory(prefix="sapiens2-many-") as tmp:
        root = Path(tmp)
        folder = root / "photos"
        folder.mkdir()
        for i in range(n):
            (folder / f"{i:07d}.jpg").touch()
        start = time.perf_counter()
        listed = list_files([str(folder)])
        listing_s = time.perf_counter() - start

        missing = root / "missing.txt"
        missing.write_text("".join(f"{root}/gone/{i:07d}.jpg\n" for i in range(n)))
        out = root / ("f.h5" if args.format == "h5" else "f")
        common = {
            "checkpoint": TINY,
            "size": (64, 48),
            "workers": 0,
            "batch_size": args.batch_size,
            "files_from": (missing,),
        }
        start = time.perf_counter()
        first = extract([], out, **common)
        failures_s = time.perf_counter() - start
        start = time.perf_counter()
        again = extract([], out, **common, retry_failed=False)
        resume_s = time.perf_counter() - start
    result = {
        "inputs": n,
        "format": args.format,
        "listing_s": round(listing_s, 2),
        "listed": len(listed),
        "failure_records_s": round(failures_s, 2),
        "failed": first.failed,
        "resume_nothing_to_do_s": round(resume_s, 2),
        "skipped": again.skipped,
        "cpu_threads": os.cpu_count(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
