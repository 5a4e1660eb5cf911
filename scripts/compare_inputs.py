"""The inputs `compare_outputs.py` runs both trees on, made once: the test photos and a
corrupt one, tar shards, a video, Parquet files, lists, a COCO box file, a projection, and
a local HTTP server for URL inputs."""

from __future__ import annotations

import gzip
import importlib.util
import io
import json
import shutil
import tarfile
from fractions import Fraction
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

SIZE = "128x96"  # an 8x6 patch grid: small, and --pool 2 divides it
PHOTOS = ("astronaut.png", "chelsea.jpg", "coffee.jpg", "hubble_deep_field.jpg")


def make_inputs(inputs: Path, sources: list[Path], url: str | None) -> None:
    """Every input, made once and shared by both trees: the golden tiny checkpoint, the test
    photos (one in a subfolder) and a corrupt one, a tar shard and a gzipped one, a short
    video, a Parquet file, path lists, COCO boxes."""
    data = _first_existing(sources, "tests/data")
    (inputs / "photos" / "sub").mkdir(parents=True)
    for n, photo in enumerate(PHOTOS):
        shutil.copy(data / photo, inputs / "photos" / ("sub" if n % 2 else "") / photo)
    (inputs / "photos" / "broken.jpg").write_bytes((data / "chelsea.jpg").read_bytes()[:300])
    shutil.copy(
        _first_existing(sources, "tests/golden") / "tiny_weights.safetensors",
        inputs / "tiny.safetensors",
    )
    (inputs / "shards").mkdir()
    members = []
    for n, photo in enumerate(PHOTOS):
        key = f"{n:09d}"
        members.append((f"{key}{Path(photo).suffix}", (data / photo).read_bytes()))
        members.append((f"{key}.json", b'{"caption": "a photo"}'))
        members.append((f"{key}.cls", str(n).encode()))
    (inputs / "shards" / "a.tar").write_bytes(_tar(members))
    (inputs / "shards" / "b.tar.gz").write_bytes(gzip.compress(_tar(members[::-1]), mtime=0))
    _write_video(inputs / "clip.mp4", data / "chelsea.jpg")
    _write_parquet(inputs / "table.parquet", data)
    listed = [inputs / "photos" / "coffee.jpg", inputs / "photos" / "sub", inputs / "missing.jpg"]
    listed.append(inputs / "shards" / "a.tar")
    (inputs / "list.txt").write_text("".join(f"{p}\n" for p in listed))
    piped = [inputs / "photos" / "broken.jpg", inputs / "photos" / "astronaut.png"]
    piped.append(inputs / "clip.mp4")
    (inputs / "stdin.txt").write_text("".join(f"{p}\n" for p in piped))
    if url is not None:
        (inputs / "urls.txt").write_text(f"{url}/photos/sub/chelsea.jpg\n{url}/photos/gone.jpg\n")
    coco = {
        "images": [
            {"id": 1, "file_name": "astronaut.png", "width": 512, "height": 512},
            {"id": 2, "file_name": "sub/chelsea.jpg", "width": 451, "height": 300},
            {"id": 3, "file_name": "coffee.jpg", "width": 600, "height": 400},
        ],
        "annotations": [
            {"id": 10, "image_id": 1, "bbox": [10, 5, 85, 123], "category_id": 1, "iscrowd": 0},
            {"id": 11, "image_id": 1, "bbox": [60, 40, 20, 25], "category_id": 1, "iscrowd": 0},
            {"id": 12, "image_id": 1, "bbox": [0, 0, 0, 10], "category_id": 1, "iscrowd": 0},
            {"id": 13, "image_id": 2, "bbox": [20, 30, 60, 100], "category_id": 1, "iscrowd": 0},
            {"id": 14, "image_id": 2, "bbox": [0, 0, 99, 99], "category_id": 1, "iscrowd": 1},
            {"id": 15, "image_id": 3, "bbox": [100, 50, 200, 300], "category_id": 2},
        ],
        "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "cup"}],
    }
    (inputs / "coco.json").write_text(json.dumps(coco))


def _first_existing(trees: list[Path], relative: str) -> Path:
    for tree in trees:
        if (tree / relative).is_dir():
            return tree / relative
    raise SystemExit(f"error: no {relative} in {', '.join(map(str, trees))}")


def _tar(members: list[tuple[str, bytes]]) -> bytes:
    """An uncompressed tar of these (name, bytes) members, in this order."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _write_video(path: Path, photo: Path, frames: int = 12, rate: int = 4) -> None:
    """A 3-second H.264 clip (B-frames, keyframes every 6) panning across a photo."""
    import av
    from PIL import Image

    pixels = np.asarray(Image.open(photo).convert("RGB"))
    pixels = np.tile(pixels, (1, 2, 1))
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.height, stream.width, stream.pix_fmt = 96, 128, "yuv420p"
        stream.codec_context.gop_size = 6
        stream.codec_context.time_base = Fraction(1, rate)
        stream.options = {"crf": "8", "bframes": "2", "scenecut": "0"}
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(
                np.ascontiguousarray(pixels[:96, 3 * i : 3 * i + 128]), format="rgb24"
            )
            frame.pts, frame.time_base = i, Fraction(1, rate)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def _write_parquet(path: Path, data: Path) -> None:
    """Hugging Face's image layout ({bytes, path} structs) in row groups of 4, with a null
    cell and a corrupt one (failure records), and an `id` column for --key-column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    cells = [{"bytes": (data / p).read_bytes(), "path": p} for p in PHOTOS]
    cells += [None, {"bytes": (data / "coffee.jpg").read_bytes()[:500], "path": "cut.jpg"}]
    kind = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    ids = [f"id-{n:03d}" for n in range(len(cells))]
    table = pa.table({"id": pa.array(ids), "image": pa.array(cells, kind)})
    pq.write_table(table, path, row_group_size=4)


def url_skip_reason() -> str | None:
    """Why http:// inputs cannot run here (the CLI reads them through fsspec + aiohttp)."""
    missing = [name for name in ("fsspec", "aiohttp") if importlib.util.find_spec(name) is None]
    return f"URL input skipped: {', '.join(missing)} not installed" if missing else None
