"""Proof that a refactor changed no behaviour: run the same `sapiens2` commands from two
source trees on the same inputs and compare everything they write.

    python scripts/compare_outputs.py BEFORE_TREE [AFTER_TREE] [--work DIR] [--keep] [--json]

AFTER_TREE defaults to the repository this script lives in. Each tree runs as
`python -m sapiens2_cli ...` with cwd and PYTHONPATH set to it (checked: the package
imported is that tree's, not an installed copy), on CPU, `--precision fp32`, one thread,
private caches and no hub. Both trees write to the same absolute output folder in turn (it
is moved aside after each), so paths recorded in outputs are the same.

Compared: HDF5 files object by object (every group, dataset and attribute: dtype, shape,
storage properties, bytes, values; not the file's bytes, which hold library internals),
`manifest.json` as parsed JSON, .safetensors files by parsed header and tensor bytes (their
metadata's key order changes from run to run), every other file (npy shards, PNGs, failure
logs) by bytes, the set of files in each command's folder, and the commands' `--json`
stdout. Only the fields in the IGNORED_* tables are skipped: those differ between two runs
of one tree. Prints one line per command and a summary; exits 1 if anything differs.

The script must not import sapiens2_cli: the package's modules move in refactors, the
command line is what must not change.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import gzip
import http.server
import importlib.util
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SIZE = "128x96"  # an 8x6 patch grid: small, and --pool 2 divides it
PHOTOS = ("astronaut.png", "chelsea.jpg", "coffee.jpg", "hubble_deep_field.jpg")
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
STEP_TIMEOUT_S = 300  # one step takes a few seconds; a hung one must not hang the proof

#: Keys of a command's `--json` stdout that differ between two runs of one tree. Only the
#: top-level key of exactly this name is skipped.
IGNORED_STDOUT_KEYS = {
    "seconds": "extract's wall time for the run",
    "images_per_s": "extract's throughput, images over that wall time",
    "sha256": "pca's hash of the file it wrote, whose metadata order varies (safetensors "
    "writes it from a hash map); the file itself is compared by content",
}
#: HDF5 attributes (by name, on any object) that differ between two runs of one tree: none.
IGNORED_H5_ATTRIBUTES: dict[str, str] = {}
#: manifest.json keys (dotted path from the top) that differ between two runs of one tree:
#: none.
IGNORED_MANIFEST_KEYS: dict[str, str] = {}


# ---------------------------------------------------------------- comparison


@dataclasses.dataclass
class Comparison:
    """What differs between two outputs (each entry: where, then how), and the names of the
    fields skipped because they differ between runs of one tree."""

    differences: list[str] = dataclasses.field(default_factory=list)
    ignored: set[str] = dataclasses.field(default_factory=set)

    @property
    def same(self) -> bool:
        return not self.differences

    def differ(self, where: str, how: str) -> None:
        self.differences.append(f"{where}: {how}")

    def extend(self, other: Comparison) -> None:
        self.differences.extend(other.differences)
        self.ignored |= other.ignored


def compare_paths(before: Path, after: Path, label: str = "") -> Comparison:
    """Two outputs of the same command: folders file by file (names and contents), HDF5
    files by content, manifest.json as JSON, anything else by bytes."""
    result = Comparison()
    label = label or before.name
    kinds = _kind(before), _kind(after)
    if kinds[0] != kinds[1]:
        result.differ(label, f"{kinds[0]} in before, {kinds[1]} in after")
    elif kinds[0] == "folder":
        _compare_folders(before, after, label, result)
    elif kinds[0] == "link":
        if os.readlink(before) != os.readlink(after):
            result.differ(label, f"link to {os.readlink(before)} vs {os.readlink(after)}")
    elif kinds[0] == "file":
        _compare_files(before, after, label, result)
    return result


def _kind(path: Path) -> str:
    if path.is_symlink():
        return "link"
    if path.is_dir():
        return "folder"
    return "file" if path.exists() else "nothing"


def _compare_folders(before: Path, after: Path, label: str, result: Comparison) -> None:
    names = sorted({p.name for p in before.iterdir()} | {p.name for p in after.iterdir()})
    for name in names:
        sub = f"{label}/{name}"
        a, b = before / name, after / name
        if not (a.exists() or a.is_symlink()):
            result.differ(sub, "only in after")
        elif not (b.exists() or b.is_symlink()):
            result.differ(sub, "only in before")
        else:
            result.extend(compare_paths(a, b, sub))


def _compare_files(before: Path, after: Path, label: str, result: Comparison) -> None:
    a, b = before.read_bytes(), after.read_bytes()
    if a.startswith(HDF5_SIGNATURE) and b.startswith(HDF5_SIGNATURE):
        compare_h5(before, after, label, result)
    elif before.suffix == ".safetensors":
        compare_safetensors(a, b, label, result)
    elif before.name == "manifest.json":
        try:
            parsed = json.loads(a), json.loads(b)
        except ValueError as error:
            result.differ(label, f"not JSON: {error}")
        else:
            compare_json(*parsed, label, result, IGNORED_MANIFEST_KEYS)
    elif a != b:
        result.differ(label, _bytes_difference(a, b))


def compare_safetensors(before: bytes, after: bytes, label: str, result: Comparison) -> None:
    """Two .safetensors files: the header as parsed JSON (safetensors writes the metadata
    from a hash map, so its key order changes between runs of one program), then the tensor
    bytes exactly."""
    try:
        parts = [_safetensors_parts(data) for data in (before, after)]
    except ValueError as error:
        result.differ(label, f"not a safetensors file: {error}")
        return
    compare_json(parts[0][0], parts[1][0], f"{label} header", result, {})
    if parts[0][1] != parts[1][1]:
        result.differ(label, f"tensor {_bytes_difference(parts[0][1], parts[1][1])}")


def _safetensors_parts(data: bytes) -> tuple[dict, bytes]:
    size = int.from_bytes(data[:8], "little")
    if len(data) < 8 + size:
        raise ValueError(f"header of {size} bytes in a file of {len(data)}")
    return json.loads(data[8 : 8 + size]), data[8 + size :]


def _bytes_difference(a: bytes, b: bytes) -> str:
    n = min(len(a), len(b))
    first = next((i for i in range(n) if a[i] != b[i]), n)
    sizes = f"{len(a)} vs {len(b)} bytes" if len(a) != len(b) else f"{len(a)} bytes"
    return f"bytes differ from offset {first} ({sizes})"


def compare_json(
    before, after, label: str, result: Comparison, ignored: dict[str, str], path: str = ""
) -> None:
    """Parsed JSON values, recursively; `ignored` holds dotted key paths to skip. 1 and 1.0,
    or true and 1, are different values here."""
    where = f"{label}: {path}" if path else label
    if isinstance(before, dict) and isinstance(after, dict):
        for key in sorted(before.keys() | after.keys()):
            sub = f"{path}.{key}" if path else key
            if sub in ignored:
                result.ignored.add(f"{label}: {sub}")
            elif key not in after:
                result.differ(where, f"key {key!r} only in before")
            elif key not in before:
                result.differ(where, f"key {key!r} only in after")
            else:
                compare_json(before[key], after[key], label, result, ignored, sub)
    elif isinstance(before, list) and isinstance(after, list):
        if len(before) != len(after):
            result.differ(where, f"{len(before)} items vs {len(after)}")
        for i, (a, b) in enumerate(zip(before, after, strict=False)):
            compare_json(a, b, label, result, ignored, f"{path}[{i}]")
    elif not _json_equal(before, after):
        result.differ(where, f"{_short(before)} vs {_short(after)}")


def _json_equal(a, b) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return a == b


def compare_h5(
    before: Path, after: Path, label: str = "", result: Comparison | None = None
) -> Comparison:
    """Two HDF5 files: the same groups, links and datasets, each dataset with the same dtype
    (string type and character set included), shape, storage properties and bytes (a virtual
    dataset: the same sources, each found), and the same attributes everywhere."""
    result = Comparison() if result is None else result
    label = label or before.name
    with h5py.File(before, "r") as a, h5py.File(after, "r") as b:
        _compare_group(a, b, "/", label, result, (before.parent, after.parent))
    return result


def _compare_group(a, b, path: str, label: str, result: Comparison, folders) -> None:
    _compare_attributes(a, b, path, label, result)
    for name in sorted(set(a) | set(b)):
        sub = f"{path.rstrip('/')}/{name}"
        link_a, link_b = a.get(name, getlink=True), b.get(name, getlink=True)
        if link_a is None or link_b is None:
            side = "before" if link_b is None else "after"
            result.differ(label, f"{sub} only in {side}")
            continue
        if type(link_a) is not type(link_b):
            result.differ(label, f"{sub} is a {type(link_a).__name__} vs {type(link_b).__name__}")
            continue
        if isinstance(link_a, h5py.SoftLink | h5py.ExternalLink):
            ends = [(getattr(link, "filename", None), link.path) for link in (link_a, link_b)]
            if ends[0] != ends[1]:
                result.differ(label, f"link {sub} to {ends[0]} vs {ends[1]}")
            continue
        obj_a, obj_b = a[name], b[name]
        if isinstance(obj_a, h5py.Group) != isinstance(obj_b, h5py.Group):
            result.differ(label, f"{sub} is a group on one side only")
        elif isinstance(obj_a, h5py.Group):
            _compare_group(obj_a, obj_b, sub, label, result, folders)
        else:
            _compare_dataset(obj_a, obj_b, sub, label, result, folders)


def _compare_attributes(a, b, path: str, label: str, result: Comparison) -> None:
    for name in sorted(set(a.attrs) | set(b.attrs)):
        where = f"{path}@{name}"
        if name in IGNORED_H5_ATTRIBUTES:
            result.ignored.add(f"{label}: {where}")
        elif name not in b.attrs:
            result.differ(label, f"attribute {where} only in before")
        elif name not in a.attrs:
            result.differ(label, f"attribute {where} only in after")
        else:
            value_a, value_b = a.attrs[name], b.attrs[name]
            type_a = a.attrs.get_id(name).dtype
            type_b = b.attrs.get_id(name).dtype
            if _type_key(type_a) != _type_key(type_b):
                result.differ(label, f"attribute {where} type {type_a} vs {type_b}")
            elif _canonical(value_a) != _canonical(value_b):
                result.differ(label, f"attribute {where} {_short(value_a)} vs {_short(value_b)}")


def _type_key(dtype: np.dtype):
    """A dtype with what numpy does not show: an HDF5 string's character set and width."""
    return dtype.str, dtype.descr, h5py.check_string_dtype(dtype), h5py.check_vlen_dtype(dtype)


def _canonical(value):
    """A value as comparable exact bytes: dtype, shape and contents (NaN equals NaN of the
    same bits)."""
    if isinstance(value, h5py.Empty):
        return "empty", str(value.dtype)
    if isinstance(value, np.ndarray | np.generic):
        array = np.asarray(value)
        if array.dtype.kind == "O":
            return "objects", array.shape, repr(array.tolist())
        return "array", array.dtype.str, array.shape, np.ascontiguousarray(array).tobytes()
    return type(value).__name__, value


_PROPERTIES = (
    "shape",
    "maxshape",
    "chunks",
    "compression",
    "compression_opts",
    "shuffle",
    "fletcher32",
    "scaleoffset",
    "is_virtual",
)


def _compare_dataset(a, b, path: str, label: str, result: Comparison, folders) -> None:
    _compare_attributes(a, b, path, label, result)
    if _type_key(a.dtype) != _type_key(b.dtype):
        result.differ(label, f"dataset {path} dtype {a.dtype} vs {b.dtype}")
        return
    for name in _PROPERTIES:
        if getattr(a, name) != getattr(b, name):
            result.differ(label, f"dataset {path} {name} {getattr(a, name)} vs {getattr(b, name)}")
            return
    if _canonical(a.fillvalue) != _canonical(b.fillvalue):
        result.differ(label, f"dataset {path} fill value {a.fillvalue!r} vs {b.fillvalue!r}")
    if a.is_virtual:
        sources = [
            _virtual_sources(ds, folder, label, result)
            for ds, folder in zip((a, b), folders, strict=True)
        ]
        if sources[0] != sources[1]:
            result.differ(label, f"dataset {path} virtual sources {sources[0]} vs {sources[1]}")
    data_a, data_b = a[()], b[()]
    if a.dtype.kind == "O":
        if data_a.tolist() != data_b.tolist():
            result.differ(label, f"dataset {path} values differ")
        return
    bytes_a = np.ascontiguousarray(data_a).view(np.uint8).reshape(-1, a.dtype.itemsize)
    bytes_b = np.ascontiguousarray(data_b).view(np.uint8).reshape(-1, b.dtype.itemsize)
    unequal = np.flatnonzero((bytes_a != bytes_b).any(axis=1))
    if unequal.size:
        first = unequal[0]
        index = np.unravel_index(first, data_a.shape) if data_a.shape else ()
        index = tuple(int(i) for i in index)
        value_a, value_b = data_a.reshape(-1)[first], data_b.reshape(-1)[first]
        result.differ(
            label,
            f"dataset {path}: {unequal.size} of {data_a.size} elements differ, first at "
            f"{index}: {_short(value_a)} vs {_short(value_b)}",
        )


def _virtual_sources(dataset, folder: Path, label: str, result: Comparison) -> list:
    """A virtual dataset's mapping; a source file that is not there is a difference, since
    HDF5 reads it as the fill value without a word."""
    sources = []
    for source in dataset.virtual_sources():
        if source.file_name != "." and not (folder / source.file_name).exists():
            result.differ(label, f"virtual source {source.file_name} not found in {folder}")
        sources.append(
            (
                source.file_name,
                source.dset_name,
                source.vspace.get_select_bounds(),
                source.src_space.get_select_bounds(),
            )
        )
    return sources


def _short(value, width: int = 70) -> str:
    text = repr(value.tolist() if isinstance(value, np.ndarray | np.generic) else value)
    return text if len(text) <= width else text[: width - 3] + "..."


def compare_stdout(before: str, after: str, label: str) -> Comparison:
    """A command's stdout: as text; when both sides are JSON, as JSON with the keys of
    IGNORED_STDOUT_KEYS skipped (timings)."""
    result = Comparison()
    try:
        parsed = json.loads(before), json.loads(after)
    except ValueError:
        if before != after:
            result.differ(label, f"stdout {_short(before)} vs {_short(after)}")
        return result
    compare_json(*parsed, label, result, IGNORED_STDOUT_KEYS)
    return result


# ---------------------------------------------------------------- the commands

#: Flags every extract step gets unless it names --checkpoint itself (a resume that takes
#: the other settings from OUT).
MODEL = f"--checkpoint {{in}}/tiny.safetensors --size {SIZE} --precision fp32 --device cpu"

#: The commands, run in this order by both trees, each in its own folder {here} under the
#: run's output folder {out} (the same path for both trees); {in} is the inputs, {url} the
#: HTTP server's address. A step is split on spaces before the names are filled in. Extract
#: steps get MODEL, --json and -q; `< FILE` feeds stdin; `snapshot A B` copies A to B in
#: {here}; `unchanged A B` fails the command if A no longer equals B (in the same tree).
COMMANDS: list[tuple[str, list[str]]] = [
    ("plain-h5", ["extract {in}/photos -o {here}/f.h5"]),
    ("plain-npy", ["extract {in}/photos -o {here}/f --rows-per-shard 2 --batch-size 3"]),
    ("map-layers-h5", ["extract {in}/photos -o {here}/f.h5 --layout map --layers 0,-1"]),
    ("map-layers-npy", ["extract {in}/photos -o {here}/f --layout map --layers 0,-1"]),
    ("tokens-all-h5", ["extract {in}/photos -o {here}/f.h5 --tokens all"]),
    ("tokens-all-npy", ["extract {in}/photos -o {here}/f --tokens all"]),
    ("tokens-cls-h5", ["extract {in}/photos -o {here}/f.h5 --tokens cls"]),
    ("tokens-cls-npy", ["extract {in}/photos -o {here}/f --tokens cls"]),
    ("tokens-mean-h5", ["extract {in}/photos -o {here}/f.h5 --tokens mean"]),
    ("letterbox-h5", ["extract {in}/photos -o {here}/f.h5 --resize letterbox --dtype float32"]),
    ("letterbox-npy", ["extract {in}/photos -o {here}/f --resize letterbox --dtype float32"]),
    ("pool-h5", ["extract {in}/photos -o {here}/f.h5 --pool 2"]),
    ("pool-npy", ["extract {in}/photos -o {here}/f --pool 2 --tokens all"]),
    ("pool-map-h5", ["extract {in}/photos -o {here}/f.h5 --pool 2 --layout map"]),
    ("int8-h5", ["extract {in}/photos -o {here}/f.h5 --dtype int8"]),
    ("int8-npy", ["extract {in}/photos -o {here}/f --dtype int8"]),
    ("int8-map-h5", ["extract {in}/photos -o {here}/f.h5 --dtype int8 --layout map"]),
    ("pca-h5", ["pca {out}/plain-h5/f.h5 -k 4 -o {here}/proj.safetensors --json"]),
    ("pca-npy", ["pca {out}/plain-npy/f -k 4 --rows 3 -o {here}/proj.safetensors --json"]),
    ("project-h5", ["extract {in}/photos -o {here}/f.h5 --project {in}/proj.safetensors"]),
    ("project-npy", ["extract {in}/photos -o {here}/f --project {in}/proj.safetensors"]),
    (
        "project-map-h5",
        ["extract {in}/photos -o {here}/f.h5 --layout map --project {in}/proj.safetensors"],
    ),
    (
        "pool-project-int8-h5",
        [
            "extract {in}/photos -o {here}/f.h5 --pool 2 --dtype int8"
            " --project {in}/proj.safetensors"
        ],
    ),
    (
        "pool-project-int8-npy",
        ["extract {in}/photos -o {here}/f --pool 2 --dtype int8 --project {in}/proj.safetensors"],
    ),
    ("tar-h5", ["extract {in}/shards/a.tar -o {here}/f.h5"]),
    ("tar-gz-npy", ["extract {in}/shards/b.tar.gz -o {here}/f"]),
    ("video-fps2-h5", ["extract {in}/clip.mp4 -o {here}/f.h5 --fps 2"]),
    ("video-every-frame-npy", ["extract {in}/clip.mp4 -o {here}/f --every-frame"]),
    ("parquet-h5", ["extract {in}/table.parquet -o {here}/f.h5"]),
    ("parquet-key-npy", ["extract {in}/table.parquet -o {here}/f --key-column id"]),
    (
        "mixed-npy",
        ["extract {in}/photos {in}/shards {in}/clip.mp4 {in}/table.parquet -o {here}/f"],
    ),
    ("files-from-h5", ["extract --files-from {in}/list.txt -o {here}/f.h5"]),
    ("stdin-npy", ["extract - -o {here}/f < {in}/stdin.txt"]),
    ("boxes-h5", ["extract {in}/photos --boxes {in}/coco.json -o {here}/f.h5"]),
    ("boxes-npy", ["extract {in}/photos --boxes {in}/coco.json -o {here}/f"]),
    (
        "url-h5",
        [
            "extract {url}/photos/astronaut.png {url}/photos/broken.jpg {url}/shards/a.tar"
            " {url}/table.parquet --files-from {in}/urls.txt -o {here}/f.h5"
        ],
    ),
    (
        "shard-merge-h5",
        [
            "extract {in}/photos -o {here}/f.h5 --shard 0/2",
            "extract {in}/photos -o {here}/f.h5 --shard 1/2",
            "merge -o {here}/f.h5 --json",
        ],
    ),
    (
        "shard-merge-npy",
        [
            "extract {in}/photos -o {here}/f --shard 0/2",
            "extract {in}/photos -o {here}/f --shard 1/2",
            "merge -o {here}/f --json",
        ],
    ),
    ("merge-copy-h5", ["merge {out}/shard-merge-h5/f.h5.parts -o {here}/f.h5 --merge copy --json"]),
    ("merge-copy-npy", ["merge {out}/shard-merge-npy/f.parts -o {here}/f --merge copy --json"]),
    (
        "resume-h5",
        [
            "extract {in}/photos -o {here}/f.h5",
            "snapshot f.h5 first.h5",
            "extract {in}/photos -o {here}/f.h5",
            "unchanged f.h5 first.h5",
        ],
    ),
    (
        "resume-npy",
        [
            "extract {in}/photos -o {here}/f",
            "snapshot f first",
            "extract {in}/photos -o {here}/f",
            "unchanged f first",
        ],
    ),
    (
        "resume-grow-h5",
        [
            "extract {in}/photos/astronaut.png -o {here}/f.h5 --dtype int8 --layers 3,-1",
            "extract {in}/photos -o {here}/f.h5 --checkpoint {in}/tiny.safetensors",
        ],
    ),
    (
        "resume-grow-npy",
        [
            "extract {in}/photos/astronaut.png -o {here}/f --pool 2",
            "extract {in}/photos -o {here}/f --checkpoint {in}/tiny.safetensors",
        ],
    ),
    (
        "info",
        [
            f"info {{out}}/{output} --json"
            for output in (
                "plain-h5/f.h5",
                "plain-npy/f",
                "pool-project-int8-h5/f.h5",
                "pool-project-int8-npy/f",
                "shard-merge-h5/f.h5",
                "shard-merge-npy/f",
                "video-fps2-h5/f.h5",
                "boxes-npy/f",
            )
        ],
    ),
    ("viz-h5", ["viz {out}/plain-h5/f.h5 -o {here}/v --grid --overlay --long-side 48 --json"]),
    (
        "viz-options",
        [
            "viz {out}/map-layers-npy/f -o {here}/joint --fit joint --layer 0 --grid"
            " --long-side 48 --json",
            "viz {out}/letterbox-h5/f.h5 -o {here}/grey --components 1"
            " --foreground-threshold 0.5 --long-side 48 --json",
        ],
    ),
    (
        "viz-inputs",
        [
            f"viz {{out}}/{output} -o {{here}}/{output.partition('/')[0]} --overlay --images 3"
            " --long-side 48 --json"
            for output in (
                "video-fps2-h5/f.h5",
                "tar-gz-npy/f",
                "parquet-h5/f.h5",
                "boxes-h5/f.h5",
                "pool-h5/f.h5",
            )
        ],
    ),
]


@dataclasses.dataclass
class Step:
    """One step of a command: `python -m sapiens2_cli ARGV` (its stdout is compared), or
    `snapshot` / `unchanged` (argv: the two names in the command's folder)."""

    kind: str
    argv: list[str]
    stdin: Path | None = None


@dataclasses.dataclass
class Command:
    name: str
    steps: list[Step]


def make_commands(inputs: Path, out: Path, url: str | None) -> list[Command]:
    """COMMANDS with the names filled in (without those needing {url} when it is None)."""
    commands = []
    for name, templates in COMMANDS:
        if url is None and any("{url}" in t for t in templates):
            continue
        names = {"in": inputs, "out": out, "here": out / name, "url": url}
        steps = []
        for template in templates:
            words = template.split()
            if words[0] == "extract" and "--checkpoint" not in words:
                words += MODEL.split()
            if words[0] == "extract":
                words += ["--json", "-q"]
            words = [word.format(**names) for word in words]
            stdin = None
            if "<" in words:
                at = words.index("<")
                stdin, words = Path(words[at + 1]), words[:at] + words[at + 2 :]
            kind = words[0] if words[0] in ("snapshot", "unchanged") else "run"
            steps.append(Step(kind, words[1:] if kind != "run" else words, stdin))
        commands.append(Command(name, steps))
    return commands


# ---------------------------------------------------------------- the inputs


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


def make_projection(tree: Path, inputs: Path, private: Path) -> None:
    """inputs/proj.safetensors for the --project commands, by BEFORE's `sapiens2 pca`, made
    once: two pca runs never write the same bytes (the metadata order varies), and the
    file's sha256 is recorded in every output projected with it."""
    env = tree_env(tree, private)
    fit = inputs / "pca-fit.h5"
    for argv in (
        [
            "extract",
            str(inputs / "photos"),
            "-o",
            str(fit),
            *MODEL.format(**{"in": inputs}).split(),
        ],
        ["pca", str(fit), "-k", "4", "-o", str(inputs / "proj.safetensors")],
    ):
        command = [sys.executable, "-m", "sapiens2_cli", *argv, "-q"]
        done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"error: making the projection: {done.stderr.strip()}")


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


class _Ranges(http.server.SimpleHTTPRequestHandler):
    """Files with byte ranges, which fsspec's HTTP reads ask for and the standard handler
    ignores."""

    def do_HEAD(self) -> None:
        self._send(body=False)

    def do_GET(self) -> None:
        self._send(body=True)

    def _send(self, body: bool) -> None:
        path = self.translate_path(self.path)
        if not os.path.isfile(path):
            self.send_error(404)
            return
        data = Path(path).read_bytes()
        wanted = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        start, end = (int(wanted[1]), int(wanted[2] or len(data) - 1) + 1) if wanted else (0, None)
        part = data[start:end]
        self.send_response(206 if wanted else 200)
        if wanted:
            self.send_header("Content-Range", f"bytes {start}-{start + len(part) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(part)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if body:
            self.wfile.write(part)

    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def http_server(folder: Path) -> Iterator[str]:
    """Serve `folder` on 127.0.0.1 for both trees' runs, so URL keys (port included) match."""
    handler = functools.partial(_Ranges, directory=str(folder))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            thread.join()


def url_skip_reason() -> str | None:
    """Why http:// inputs cannot run here (the CLI reads them through fsspec + aiohttp)."""
    missing = [name for name in ("fsspec", "aiohttp") if importlib.util.find_spec(name) is None]
    return f"URL input skipped: {', '.join(missing)} not installed" if missing else None


# ---------------------------------------------------------------- running a tree


@dataclasses.dataclass
class Side:
    """One tree's run of one command: each step's stdout, an error, in-tree check results."""

    stdouts: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    error: str | None = None
    checks: list[str] = dataclasses.field(default_factory=list)


def tree_env(tree: Path, private: Path) -> dict[str, str]:
    """The environment a tree runs in: its own package first, one thread, caches of its
    own, the hub offline, CPU only, nothing from this shell that changes the tool."""
    dropped = ("SAPIENS2_", "PYTHON", "HF_", "HUGGINGFACE", "XDG_", "CUDA_", "AWS_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    env.update(
        PYTHONPATH=str(tree),
        PYTHONDONTWRITEBYTECODE="1",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        XDG_CACHE_HOME=str(private / "cache"),
        HF_HOME=str(private / "hf"),
        HF_HUB_OFFLINE="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        CUDA_VISIBLE_DEVICES="",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
    )
    return env


def check_import(tree: Path, env: dict[str, str]) -> None:
    """Stop unless `python -m sapiens2_cli` in this env runs this tree's code (an editable
    install of another checkout must not win)."""
    code = "import sapiens2_cli; print(sapiens2_cli.__file__)"
    found = subprocess.run(
        [sys.executable, "-c", code], cwd=tree, env=env, capture_output=True, text=True
    )
    path = Path(found.stdout.strip()).resolve() if found.returncode == 0 else None
    if path is None or not path.is_relative_to(tree.resolve()):
        raise SystemExit(f"error: in {tree} sapiens2_cli comes from {path or found.stderr}")


def run_tree(tree: Path, side: str, commands: list[Command], work: Path) -> dict[str, Side]:
    """Run every command from `tree` into work/out, then move work/out to work/SIDE."""
    env = tree_env(tree, work / "env" / side)
    check_import(tree, env)
    out = work / "out"
    out.mkdir()
    results = {}
    for command in commands:
        folder = out / command.name
        folder.mkdir()
        results[command.name] = result = Side()
        for i, step in enumerate(command.steps):
            if step.kind == "snapshot":
                source, copy = (folder / name for name in step.argv)
                (shutil.copytree if source.is_dir() else shutil.copy2)(source, copy)
            elif step.kind == "unchanged":
                now, then = step.argv
                check = compare_paths(folder / then, folder / now, now)
                result.checks += [f"the rerun changed {d}" for d in check.differences]
            else:
                label = f"step {i + 1} ({step.argv[0]})"
                try:
                    done = subprocess.run(
                        [sys.executable, "-m", "sapiens2_cli", *step.argv],
                        cwd=tree,
                        env=env,
                        input=step.stdin.read_bytes() if step.stdin else b"",
                        capture_output=True,
                        timeout=STEP_TIMEOUT_S,
                    )
                except subprocess.TimeoutExpired:
                    result.error = f"{label} still running after {STEP_TIMEOUT_S} s"
                    break
                stdout = done.stdout.decode(errors="backslashreplace")
                result.stdouts.append((label, stdout))
                if done.returncode != 0:
                    stderr = done.stderr.decode(errors="backslashreplace").strip()
                    tail = stderr.splitlines()[-1:] or ["(no stderr)"]
                    result.error = f"{label} exit {done.returncode}: {tail[0]}"
                    break
    out.rename(work / side)
    return results


def compare_command(command: Command, work: Path, before: Side, after: Side) -> Comparison:
    result = Comparison()
    for side, run in (("before", before), ("after", after)):
        if run.error:
            result.differ(side, run.error)
        for check in run.checks:
            result.differ(side, check)
    for (label, a), (_, b) in zip(before.stdouts, after.stdouts, strict=False):
        result.extend(compare_stdout(a, b, f"{label} stdout"))
    result.extend(compare_paths(work / "before" / command.name, work / "after" / command.name))
    return result


def describe(tree: Path) -> str:
    head = subprocess.run(
        ["git", "-C", str(tree), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
    )
    return f"{tree} ({head.stdout.strip() or 'not a git checkout'})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path, help="the source tree before the change")
    parser.add_argument(
        "after", type=Path, nargs="?", default=ROOT, help="the tree after (default: this one)"
    )
    parser.add_argument("--work", type=Path, help="an empty or new folder to work in")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args(argv)
    before, after = args.before.resolve(), args.after.resolve()
    for tree in (before, after):
        if not (tree / "sapiens2_cli").is_dir():
            parser.error(f"{tree} holds no sapiens2_cli package")
    if args.work is not None:
        if args.work.exists() and any(args.work.iterdir()):
            parser.error(f"--work {args.work} is not empty")
        args.work.mkdir(parents=True, exist_ok=True)
        work = args.work.resolve()
    else:
        work = Path(tempfile.mkdtemp(prefix="compare-outputs-"))
    log = functools.partial(print, file=sys.stderr, flush=True)
    log(f"before: {describe(before)}\nafter:  {describe(after)}\nwork:   {work}")
    skipped = url_skip_reason()
    try:
        with contextlib.ExitStack() as stack:
            (work / "inputs").mkdir()
            url = None if skipped else stack.enter_context(http_server(work / "inputs"))
            make_inputs(work / "inputs", [after, before], url)
            make_projection(before, work / "inputs", work / "env" / "inputs")
            commands = make_commands(work / "inputs", work / "out", url)
            runs, seconds = {}, {}
            for side, tree in (("before", before), ("after", after)):
                start = time.monotonic()
                runs[side] = run_tree(tree, side, commands, work)
                seconds[side] = round(time.monotonic() - start, 1)
                log(f"{side}: {len(commands)} commands in {seconds[side]} s")
        report = []
        for command in commands:
            result = compare_command(
                command, work, runs["before"][command.name], runs["after"][command.name]
            )
            report.append((command, result))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    differ = sum(not result.same for _, result in report)
    summary = f"{len(report)} commands: {len(report) - differ} same, {differ} differ"
    if args.json:
        print(
            json.dumps(
                {
                    "before": str(before),
                    "after": str(after),
                    "seconds": seconds,
                    "skipped": [skipped] if skipped else [],
                    "ignored_fields": {
                        "stdout": IGNORED_STDOUT_KEYS,
                        "h5_attributes": IGNORED_H5_ATTRIBUTES,
                        "manifest": IGNORED_MANIFEST_KEYS,
                    },
                    "commands": [
                        {
                            "name": command.name,
                            "steps": [[s.kind, *s.argv] for s in command.steps],
                            "same": result.same,
                            "differences": result.differences,
                            "ignored": sorted(result.ignored),
                        }
                        for command, result in report
                    ],
                    "summary": summary,
                    "work": str(work) if args.keep else None,
                },
                indent=1,
            )
        )
    else:
        width = max(len(command.name) for command, _ in report)
        for command, result in report:
            if result.same:
                print(f"{command.name:<{width}}  same")
            else:
                more = len(result.differences) - 1
                extra = f" (and {more} more)" if more else ""
                print(f"{command.name:<{width}}  differ: {result.differences[0]}{extra}")
        if skipped:
            print(skipped)
        ignored = sorted({i.rpartition(": ")[2] for _, r in report for i in r.ignored})
        reasons = {**IGNORED_STDOUT_KEYS, **IGNORED_H5_ATTRIBUTES, **IGNORED_MANIFEST_KEYS}
        for name in ignored:
            print(f"ignored {name}: {reasons.get(name.rpartition('@')[2], '')}")
        print(summary)
    if args.keep:
        log(f"outputs kept in {work}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
