"""Parquet / Arrow rows against the same images as loose files: rows decoded per second.

Makes photo-like JPEGs (`scripts/make_bench_images.py`), writes the same bytes as loose
files, as a Parquet file (Hugging Face's struct {bytes, path} layout, row groups of
`--group` rows) and as an Arrow IPC file, then, in one process, runs each input's reader
(what a decode worker runs: read the bytes, decode, resize to `--size`) over all its items
in the loader's runs of 64, alternating the inputs `--repeats` times. Rates are images
over the process's CPU time (per core), with the wall-clock rate beside.

    python scripts/bench_parquet.py --count 256 --group 100 --repeats 3 [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_bench_images import make_images

from sapiens2_cli.config.values import parse_size
from sapiens2_cli.engine.loader import work_units
from sapiens2_cli.inputs.items import Preprocess, Row
from sapiens2_cli.inputs.sources import ImageSource
from sapiens2_cli.inputs.tables.parquet import ParquetSource


def write_tables(folder: Path, images: list[Path], group: int) -> dict[str, Path]:
    kind = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    cells = [{"bytes": p.read_bytes(), "path": p.name} for p in images]
    table = pa.table({"image": pa.array(cells, kind)})
    pq.write_table(table, folder / "images.parquet", row_group_size=group)
    with pa.ipc.new_file(folder / "images.arrow", table.schema) as out:
        for batch in table.to_batches(max_chunksize=group):
            out.write_batch(batch)
    return {"parquet": folder / "images.parquet", "arrow": folder / "images.arrow"}


def timed(items, prep: Preprocess) -> tuple[float, float]:
    """(CPU seconds, wall seconds) to read every item, in the loader's runs."""
    cpu, wall = time.process_time(), time.perf_counter()
    for unit in work_units(items, 64):
        rows = list(unit[0].reader.read(unit, prep))
        assert all(isinstance(r, Row) for r in rows), rows
    return time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=256)
    parser.add_argument("--image", default="480x640", help="HxW of the JPEGs")
    parser.add_argument("--size", default="1024x768", help="HxW the model gets")
    parser.add_argument("--group", type=int, default=100, help="rows per row group")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    image = parse_size(args.image)
    prep = Preprocess(parse_size(args.size))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        images = make_images(folder / "loose", args.count, image)
        tables = write_tables(folder, images, args.group)
        inputs = {"loose files": ImageSource().expand([str(p) for p in images]).items}
        for name, path in tables.items():
            inputs[name] = ParquetSource().expand([str(path)]).items
        spent = {name: [0.0, 0.0] for name in inputs}
        for _ in range(args.repeats):
            for name, items in inputs.items():
                cpu, wall = timed(items, prep)
                spent[name][0] += cpu
                spent[name][1] += wall
    total = args.count * args.repeats
    report = {
        name: {"images_per_cpu_s": total / cpu, "images_per_wall_s": total / wall}
        for name, (cpu, wall) in spent.items()
    }
    if args.json:
        print(json.dumps(report))
        return
    for name, rates in report.items():
        print(
            f"{name:12s} {rates['images_per_cpu_s']:7.1f} images/s per core "
            f"({rates['images_per_wall_s']:.1f} wall)"
        )


if __name__ == "__main__":
    main()
