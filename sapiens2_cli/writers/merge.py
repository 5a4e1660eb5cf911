"""Parts of one output and joining them: `--shard I/N` jobs and torchrun ranks each write a
part next to OUT, and `merge_outputs` joins them into OUT.

Part k of a split into N lives at `OUT.parts/part-0000k-of-0000N.h5` (HDF5; the suffix is
OUT's) or `OUT.parts/part-0000k-of-0000N/` (npy), and records `part = [k, N]` in its
settings. A join never moves features unless asked:

* virtual (default): HDF5 `features` is a virtual dataset mapping each part's committed
  rows, by a path relative to OUT's folder, so OUT and OUT.parts move together; npy lists
  the parts' shards in one manifest, by relative paths. The small per-row arrays are copied.
* copy: every row is written again into a self-contained OUT, through the same writers
  that extract uses.

An HDF5 OUT is built under a temporary name and renamed into place; an npy manifest is
replaced atomically (as the npy writer does). Joining again replaces the earlier join.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from sapiens2_cli.choices import MergeMode
from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.settings import difference
from sapiens2_cli.writers.base import (
    FeatureWriter,
    OutputLock,
    RowBatch,
    concat_columns,
    fsync_dir,
    one_line_if_full,
    removed_on_failure,
)
from sapiens2_cli.writers.hdf5 import H5Writer, encode, string_dtype, to_attr
from sapiens2_cli.writers.npy import (
    MANIFEST,
    NpyWriter,
    default_shard_rows,
    is_own_file,
    new_manifest,
    next_failed_index,
    write_failed,
    write_manifest,
)
from sapiens2_cli.writers.output import remove_output
from sapiens2_cli.writers.parts import Part
from sapiens2_cli.writers.reader import FeatureFile, detect_format, open_features
from sapiens2_cli.writers.reductions import join_reductions

ROW_ALIGNED = ("features", "scales")  # what a virtual HDF5 join maps rather than copies

COPY_BYTES = 256 * 2**20  # features read and written at a time by --merge copy


@dataclass(frozen=True)
class Merged:
    """What a join wrote."""

    output: Path
    parts: int
    rows: int
    failed: int
    mode: MergeMode


@dataclass
class _Source:
    path: Path
    file: FeatureFile
    part: Part | None


def merge_outputs(parts: Sequence[Path], out: Path, mode: MergeMode = MergeMode.VIRTUAL) -> Merged:
    """Join extract outputs (normally the parts of one split) into `out`, after checking
    they share settings, hold disjoint images, are complete, and form the whole split."""
    if not parts:
        raise Sapiens2Error(
            f"no parts to merge beside {out}: give the part files, or run extract with "
            "--shard I/N (or under torchrun) first"
        )
    mode = MergeMode.parse(mode, "--merge")
    out.parent.mkdir(parents=True, exist_ok=True)
    lock = OutputLock(out)  # no extract (or other join) writes OUT meanwhile
    try:
        return _merge(parts, out, mode)
    finally:
        lock.release()


def _merge(parts: Sequence[Path], out: Path, mode: MergeMode) -> Merged:
    with _open_all(parts) as sources:
        fmt = _check(sources, out)
        reductions = join_reductions({str(s.path): s.file.reductions for s in sources})
        settings = {k: v for k, v in sources[0].file.settings.items() if k != "part"}
        settings["complete"] = True  # every part is complete (checked)
        record = {
            "parts": [os.path.relpath(s.path, out.parent) for s in sources],
            "merge": mode.value,
        }
        failed = _failures(sources)
        if fmt == "h5":
            _join_h5(sources, out, settings, record, failed, reductions)
        elif mode == "virtual":
            _write_npy_manifest(sources, out, {**settings, **record}, failed, reductions)
        else:
            remove_output(out)
            row_shape, rows = sources[0].file.row_shape, _copy_rows(sources)
            writer = NpyWriter.create(
                out, {**settings, **record}, row_shape, rows, None, reductions
            )
            _copy(sources, failed, writer)
        rows = sum(len(s.file) for s in sources)
    return Merged(out, len(parts), rows, len(failed), mode)


@contextlib.contextmanager
def _open_all(paths: Sequence[Path]) -> Iterator[list[_Source]]:
    """Open every part (closing them all at the end, or if one fails to open)."""
    with contextlib.ExitStack() as stack:
        sources = []
        for path in map(Path, paths):
            f = stack.enter_context(open_features(path))
            record = f.settings.get("part")
            sources.append(_Source(path, f, Part(*record) if record is not None else None))
        yield sources


def _check(sources: list[_Source], out: Path) -> str:
    """The parts' format, once every check has passed; one line for the first problem."""
    first = sources[0]
    fmt = detect_format(first.path)
    seen: set[Path] = set()
    for s in sources:
        if s.path.resolve() in seen:
            raise Sapiens2Error(f"{s.path} is given twice: list each part once")
        seen.add(s.path.resolve())
        if s.path.resolve() == out.resolve():
            raise Sapiens2Error(f"{out} is both a part and -o: write the join to another path")
        if "parts" in s.file.settings:
            raise Sapiens2Error(f"{s.path} is itself a join of parts: merge its parts instead")
        if detect_format(s.path) != fmt:
            raise Sapiens2Error(
                f"{s.path} is {detect_format(s.path)} but {first.path} is {fmt}: merge parts "
                "of one format"
            )
        differs = difference(first.file.settings, s.file.settings)
        if differs:
            raise Sapiens2Error(
                f"{s.path} was made with different settings from {first.path}: {differs}; "
                "merge only parts of one extract command"
            )
    _check_split(sources, out, fmt)
    for s in sources:
        if s.file.settings.get("complete") is not True:
            name = f"{s.part} ({s.path})" if s.part else str(s.path)
            raise Sapiens2Error(
                f"{name} is incomplete (its run was stopped or is still going): rerun its "
                "extract command to finish it, then merge again"
            )
    _check_disjoint(sources)
    return fmt


def _check_split(sources: list[_Source], out: Path, fmt: str) -> None:
    """Every input must be a part of one split, all of its parts there, once each."""
    for s in sources:
        if s.part is None:
            raise Sapiens2Error(
                f"{s.path} is the output of a single run, not a part of a split job: merge "
                "joins the parts that extract --shard I/N or torchrun wrote"
            )
    count = sources[0].part.count
    seen: dict[int, Path] = {}
    for s in sources:
        if s.part.count != count:
            raise Sapiens2Error(
                f"{s.path} is {s.part} but {sources[0].path} is {sources[0].part}: merge the parts "
                "of one split"
            )
        if s.part.index in seen:
            raise Sapiens2Error(f"{s.part} is given twice ({seen[s.part.index]}, {s.path})")
        seen[s.part.index] = s.path
    missing = [k for k in range(count) if k not in seen]
    if missing:
        k = missing[0]
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise Sapiens2Error(
            f"part {k} of {count} is missing{more}, expected at {Part(k, count).path(out, fmt)}: "
            f"run it (extract --shard {k}/{count}) and merge again"
        )


def _check_disjoint(sources: list[_Source]) -> None:
    owner: dict[str, Path] = {}
    for s in sources:
        for p in s.file.paths:
            if p in owner:
                raise Sapiens2Error(
                    f"{p} is in both {owner[p]} and {s.path}: the parts overlap; merge the "
                    "parts of one split, each once"
                )
            owner[p] = s.path


def _failures(sources: list[_Source]) -> dict[str, str]:
    rows = {p for s in sources for p in s.file.paths}
    return {p: e for s in sources for p, e in s.file.failed if p not in rows}


def _copy_rows(sources: list[_Source]) -> int:
    """Rows per read (and per npy shard) when copying: about COPY_BYTES of features."""
    row = next((s.file.read([0]) for s in sources if len(s.file)), None)
    return default_shard_rows(row.nbytes if row is not None else 1)


def _copy(sources: list[_Source], failed: dict[str, str], writer: FeatureWriter) -> None:
    """Every row and failure record again, through an extract writer."""
    step = _copy_rows(sources)
    try:
        for s in sources:
            f = s.file
            for start in range(0, len(f), step):
                rows = slice(start, min(len(f), start + step))
                columns = {name: f.column(name)[rows] for name in f.columns}
                features, scales = f.read_raw(rows)  # int8 as stored: its loss comes joined
                writer.write(RowBatch(f.paths[rows], features, columns, scales=scales))
        writer.write(RowBatch([], None, failures=list(failed.items())))
    except BaseException:
        writer.close(complete=False)
        raise
    writer.close(complete=True)


def _join_h5(
    sources: list[_Source],
    out: Path,
    settings: dict,
    record: dict,
    failed: dict[str, str],
    reductions: dict,
) -> None:
    """Build the joined file under a temporary name, then rename it over `out`; if that
    fails (a full disk), the temporary file goes and `out` is as it was."""
    tmp = out.with_name(out.name + ".merging")
    tmp.unlink(missing_ok=True)
    with h5py.File(sources[0].path, "r", locking=False) as f:
        features = f["features"]
        row_shape, dtype, compression = features.shape[1:], features.dtype, features.compression
    with one_line_if_full(out), removed_on_failure(tmp):
        if record["merge"] == "virtual":
            _write_h5_virtual(sources, tmp, out, settings, failed)
        else:
            writer = H5Writer.create(tmp, settings, row_shape, dtype, compression, None, reductions)
            _copy(sources, failed, writer)
        with h5py.File(tmp, "r+") as f:
            f.attrs["parts"] = np.array(record["parts"], dtype=h5py.string_dtype())
            f.attrs["merge"] = record["merge"]
            if reductions:  # the parts' losses added up
                f.attrs["reductions"] = json.dumps(reductions)
        with open(tmp, "rb+") as raw:
            os.fsync(raw.fileno())
        os.replace(tmp, out)
    fsync_dir(out.parent)


def _write_h5_virtual(
    sources: list[_Source], tmp: Path, out: Path, settings: dict, failed: dict[str, str]
) -> None:
    """`features` (and int8's `scales`) map each part's committed rows by a path relative to
    OUT's folder; the small per-row arrays are copied."""
    with h5py.File(tmp, "w") as f:
        for name in ROW_ALIGNED:
            layout = _virtual_layout(sources, out, name)
            if layout is not None:  # NaN (int8: 0) where a part cannot be opened, so a plain
                fill = np.nan if layout.dtype.kind == "f" else 0  # h5py reader sees no zeros
                f.create_virtual_dataset(name, layout, fillvalue=fill)
        _put_strings(f, "paths", [p for s in sources for p in s.file.paths])
        for name, values in _columns(sources).items():
            f[name] = values
        _put_strings(f, "failed_paths", list(failed))
        _put_strings(f, "failed_errors", list(failed.values()))
        for key, value in settings.items():
            f.attrs[key] = to_attr(value)
        f.attrs["rows"] = sum(len(s.file) for s in sources)
        f.attrs["failures"] = len(failed)


def _virtual_layout(sources: list[_Source], out: Path, name: str) -> h5py.VirtualLayout | None:
    """Row-aligned dataset `name` of every part, end to end; None if the parts lack it."""
    with h5py.File(sources[0].path, "r", locking=False) as f:
        if name not in f:
            return None
        row_shape, dtype = f[name].shape[1:], f[name].dtype
    layout = h5py.VirtualLayout((sum(len(s.file) for s in sources), *row_shape), dtype)
    start = 0
    for s in sources:
        n = len(s.file)
        if n:
            with h5py.File(s.path, "r", locking=False) as f:
                shape = f[name].shape  # may hold uncommitted rows past n
            source = h5py.VirtualSource(os.path.relpath(s.path, out.parent), name, shape)
            layout[start : start + n] = source[:n]
        start += n
    return layout


def _columns(sources: list[_Source]) -> dict[str, np.ndarray]:
    """Every part's columns, row-aligned; a part without one gives its fill value."""
    return concat_columns(
        [(len(s.file), {name: s.file.column(name) for name in s.file.columns}) for s in sources]
    )


def _put_strings(f: h5py.File, name: str, values: list[str]) -> None:
    """Fixed-width UTF-8, as the extract writer stores strings."""
    encoded = encode(values)
    width = max(map(len, encoded), default=0) or 1
    f[name] = np.array(encoded, dtype=string_dtype(width)).reshape(-1)


def _write_npy_manifest(
    sources: list[_Source], out: Path, settings: dict, failed: dict[str, str], reductions: dict
) -> None:
    shards = []
    for s in sources:
        manifest = json.loads((s.path / MANIFEST).read_text(encoding="utf-8"))
        for shard in manifest["shards"]:
            entry = {"index": len(shards), "rows": shard["rows"]}
            for key, name in shard.items():
                if key not in ("index", "rows"):
                    entry[key] = os.path.relpath(s.path / name, out)
            shards.append(entry)
    out.mkdir(parents=True, exist_ok=True)
    index = next_failed_index([p.name for p in out.glob("failed-*.json")])  # a new name
    names = [write_failed(out, list(failed.items()), index)] if failed else []
    row_shape = sources[0].file.row_shape
    manifest = new_manifest(settings, row_shape, shards, names, True, reductions)
    write_manifest(out, manifest)
    for leftover in out.iterdir():  # shards and records of an earlier join into this folder
        if is_own_file(leftover.name) and leftover.name not in (MANIFEST, *names):
            leftover.unlink()
