"""What `compare_outputs.py` compares and how: HDF5 files object by object, manifest.json
as parsed JSON, .safetensors by header and tensor bytes, every other file by bytes, and the
commands' `--json` stdout, skipping only the fields of the IGNORED_* tables (those differ
between two runs of one tree)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import h5py
import numpy as np

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"

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
