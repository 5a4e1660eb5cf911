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

An HDF5 OUT is built under a temporary name and renamed into place (the virtual dataset:
output/hdf5/join.py); an npy manifest is replaced atomically (`write_joined_manifest`, as
the npy writer does). Joining again replaces the earlier join. What the parts and OUT must
be is checked here: `check_join_target` before any work, the parts by `merge_outputs`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from sapiens2_cli.config.choices import MergeMode
from sapiens2_cli.config.records import difference
from sapiens2_cli.config.values import Part
from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.output.atomic import built_in_place
from sapiens2_cli.output.features import PartFile
from sapiens2_cli.output.hdf5.join import features_layout, record_join, write_virtual
from sapiens2_cli.output.hdf5.writer import H5Writer
from sapiens2_cli.output.lock import OutputLock
from sapiens2_cli.output.npy.writer import NpyWriter, default_shard_rows, write_joined_manifest
from sapiens2_cli.output.opening import check_output_path, remove_output
from sapiens2_cli.output.parts import part_path
from sapiens2_cli.output.reader import detect_format, open_features
from sapiens2_cli.output.rows import RowBatch
from sapiens2_cli.output.writer import FeatureWriter
from sapiens2_cli.reduce.losses import join_reductions


@dataclass(frozen=True)
class Merged:
    """What a join wrote."""

    output: Path
    parts: int
    rows: int
    failed: int
    mode: MergeMode


def check_join_target(out: Path, fmt: str, overwrite: bool) -> None:
    """Refuse, before any work, an OUT a join cannot write (`check_output_path`), or one that
    holds a single run's output, which a join would replace (unless --overwrite); an earlier
    join is replaced."""
    check_output_path(out, fmt, overwrite)
    if overwrite or detect_format(out) is None:
        return
    with open_features(out) as existing:
        if "parts" in existing.settings:
            return
    raise Sapiens2Error(
        f"{out} holds the output of a single run, which joining parts would replace: choose "
        "another -o, or pass --overwrite"
    )


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
            paths, row_shape = [s.path for s in sources], sources[0].file.row_shape
            write_joined_manifest(paths, out, {**settings, **record}, row_shape, failed, reductions)
        else:
            remove_output(out)
            row_shape, step = sources[0].file.row_shape, _copy_rows(sources)
            writer = NpyWriter.create(
                out, {**settings, **record}, row_shape, step, None, reductions
            )
            _copy(sources, failed, writer, step)
        rows = sum(len(s.file) for s in sources)
    return Merged(out, len(parts), rows, len(failed), mode)


@contextlib.contextmanager
def _open_all(paths: Sequence[Path]) -> Iterator[list[PartFile]]:
    """Open every part (closing them all at the end, or if one fails to open)."""
    with contextlib.ExitStack() as stack:
        sources = []
        for path in map(Path, paths):
            f = stack.enter_context(open_features(path))
            record = f.settings.get("part")
            sources.append(PartFile(path, f, Part(*record) if record is not None else None))
        yield sources


def _check(sources: list[PartFile], out: Path) -> str:
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


def _check_split(sources: list[PartFile], out: Path, fmt: str) -> None:
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
            f"part {k} of {count} is missing{more}, expected at "
            f"{part_path(out, Part(k, count), fmt)}: "
            f"run it (extract --shard {k}/{count}) and merge again"
        )


def _check_disjoint(sources: list[PartFile]) -> None:
    owner: dict[str, Path] = {}
    for s in sources:
        for p in s.file.paths:
            if p in owner:
                raise Sapiens2Error(
                    f"{p} is in both {owner[p]} and {s.path}: the parts overlap; merge the "
                    "parts of one split, each once"
                )
            owner[p] = s.path


def _failures(sources: list[PartFile]) -> dict[str, str]:
    rows = {p for s in sources for p in s.file.paths}
    return {p: e for s in sources for p, e in s.file.failed if p not in rows}


def _copy_rows(sources: list[PartFile]) -> int:
    """Rows per read (and per npy shard) when copying: as many as a default npy shard holds,
    counted as stored (int8 with its scales), from the metadata alone."""
    return default_shard_rows(sources[0].file.row_nbytes)


def _copy(
    sources: list[PartFile], failed: dict[str, str], writer: FeatureWriter, step: int
) -> None:
    """Every row and failure record again, through an extract writer, `step` rows a read."""
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
    sources: list[PartFile],
    out: Path,
    settings: dict,
    record: dict,
    failed: dict[str, str],
    reductions: dict,
) -> None:
    """Build the joined file under a temporary name, then rename it over `out`; if that
    fails (a full disk), the temporary file goes and `out` is as it was."""
    with built_in_place(out, ".merging") as tmp:
        if record["merge"] == "virtual":
            write_virtual(sources, tmp, out, settings, failed)
        else:
            row_shape, dtype, compression = features_layout(sources[0].path)
            writer = H5Writer.create(tmp, settings, row_shape, dtype, compression, None, reductions)
            _copy(sources, failed, writer, _copy_rows(sources))
        record_join(tmp, record, reductions)
