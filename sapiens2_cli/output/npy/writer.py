"""npy output: a folder of plain .npy shards and a manifest.json listing the finished ones.

Each batch's features go straight into the shard being written, under a temporary name:
its .npy header first, then the rows appended batch by batch, never gathered into one array
(a second copy held the writer to a third of the disk's speed). When the shard
is full (or the run ends) the header is rewritten with the final row count, the file fsynced
and renamed; its paths and columns (small) follow the same way, and only after that is the
manifest rewritten the same way to list it. Failure records since the last manifest go into a new
`failed-NNNNN.json` written (the same way) just before the manifest that lists it, so the
manifest stays small and a record is written once, not with every shard. A kill loses at
most the shard in progress and its records, which a rerun recomputes; files no manifest
lists are leftovers of such a kill and are removed. `close` compacts the failure files into
one. Keys with surrogate escapes (non-UTF-8 file names) survive both the '<U' arrays and
JSON (as \\udcXX escapes).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from sapiens2_cli.output.atomic import fsync_dir
from sapiens2_cli.output.disk import one_line_if_full
from sapiens2_cli.output.lock import OutputLock
from sapiens2_cli.output.npy.shard_file import ShardFile, write_atomic
from sapiens2_cli.output.rows import FORMAT_VERSION, RowBatch, concat_columns
from sapiens2_cli.output.writer import FeatureWriter
from sapiens2_cli.reduce.losses import add_losses

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "sapiens2-features-npy"
SHARD_BYTES = 256 * 2**20  # default shard size: about this many bytes of features
MAX_SHARD_ROWS = 4096


def default_shard_rows(row_bytes: int) -> int:
    """Rows per shard so a shard holds about SHARD_BYTES of features."""
    return max(1, min(MAX_SHARD_ROWS, SHARD_BYTES // max(1, row_bytes)))


#: The names of the files this writer makes inside OUT, and of their temporary copies.
OWN_FILE = re.compile(
    r"(manifest\.json|shard-\d{5,}\.[a-z][a-z0-9_]*\.npy|failed-\d{5,}\.json)(\.tmp)?"
)


def is_own_file(name: str) -> bool:
    """Files this writer makes inside OUT (the only ones --overwrite may delete): named
    exactly as it names them, so a user's `shard-notes.txt` is not one."""
    return OWN_FILE.fullmatch(name) is not None


def _json(value: object) -> bytes:
    return json.dumps(value, indent=1).encode()  # ASCII: surrogates become \udcXX escapes


def write_manifest(folder: Path, manifest: dict) -> None:
    write_atomic(folder / MANIFEST, _json(manifest))
    fsync_dir(folder)


def next_failed_index(names: list[str]) -> int:
    """The index of the next failure file after `names` (failed-NNNNN.json)."""
    return 1 + max((int(name[len("failed-") : -len(".json")]) for name in names), default=-1)


def write_failed(folder: Path, records: list[tuple[str, str]], index: int) -> str:
    """Write failure records as `failed-<index>.json`; its name."""
    name = f"failed-{index:05d}.json"
    write_atomic(folder / name, _json([{"path": p, "error": e} for p, e in records]))
    return name


def new_manifest(
    settings: dict,
    row_shape: tuple[int, ...],
    shards: list[dict],
    failed: list[str],
    complete: bool,
    reductions: dict | None = None,
) -> dict:
    """The manifest.json an output folder holds (docs/format.md)."""
    manifest = {
        "format": MANIFEST_FORMAT,
        "format_version": FORMAT_VERSION,
        "settings": settings,
        "row_shape": list(row_shape),
        "shards": shards,
        "failed_files": failed,
        "complete": complete,
    }
    if reductions:
        manifest["reductions"] = reductions
    return manifest


def listed_files(manifest: dict) -> set[str]:
    """Every file `manifest` lists (itself included): what a commit holds."""
    files = {MANIFEST, *manifest["failed_files"]}
    for shard in manifest["shards"]:
        files.update(name for key, name in shard.items() if key not in ("index", "rows"))
    return files


class Sink(Protocol):
    """Where each commit of a local folder also goes (an object store: output/url/staged.py)."""

    def commit(self, folder: Path, manifest: dict, prune: bool = False) -> None:
        """Copy the files `manifest` lists, then the manifest; `prune`: then remove this
        writer's files that it does not list."""


def write_joined_manifest(
    parts: Sequence[Path],
    out: Path,
    settings: dict,
    row_shape: tuple[int, ...],
    failed: dict[str, str],
    reductions: dict,
) -> None:
    """A manifest in `out` listing every shard of the npy outputs `parts`, by paths relative
    to `out`, and a new failure file; files of an earlier join into `out` are removed."""
    shards = []
    for part in parts:
        manifest = json.loads((part / MANIFEST).read_text(encoding="utf-8"))
        for shard in manifest["shards"]:
            entry = {"index": len(shards), "rows": shard["rows"]}
            for key, name in shard.items():
                if key not in ("index", "rows"):
                    entry[key] = os.path.relpath(part / name, out)
            shards.append(entry)
    out.mkdir(parents=True, exist_ok=True)
    index = next_failed_index([p.name for p in out.glob("failed-*.json")])  # a new name
    names = [write_failed(out, list(failed.items()), index)] if failed else []
    manifest = new_manifest(settings, row_shape, shards, names, True, reductions)
    write_manifest(out, manifest)
    for leftover in out.iterdir():  # shards and records of an earlier join into this folder
        if is_own_file(leftover.name) and leftover.name not in (MANIFEST, *names):
            leftover.unlink()


class NpyWriter(FeatureWriter):
    """Appends rows as shards in a folder; see the module docstring for the commit protocol.
    With a `sink`, each commit is then copied there (the folder is a staging copy)."""

    def __init__(
        self,
        path: Path,
        manifest: dict,
        failed: dict[str, str],
        shard_rows: int,
        lock: OutputLock | None,
        stale: bool = False,
        sink: Sink | None = None,
    ) -> None:
        super().__init__(path, failed, lock, stale, manifest.get("reductions"))
        self._sink = sink
        self._manifest = manifest
        self._shard_rows = shard_rows
        self._shard: ShardFile | None = None  # the shard being written, if any
        self._held: list[RowBatch] = []  # its rows' keys, columns, scales, losses: no features
        self._rows = sum(s["rows"] for s in manifest["shards"])
        self._failed_index = next_failed_index(manifest["failed_files"])
        self._adopting: Path | None = None  # a finished features file `adopt` takes

    @classmethod
    def create(
        cls,
        path: Path,
        settings: dict,
        row_shape: tuple[int, ...],
        shard_rows: int,
        lock: OutputLock | None,
        reductions: dict | None = None,
        sink: Sink | None = None,
    ) -> NpyWriter:
        """A new, empty output folder at `path` (gone again if it cannot be made: a full
        disk leaves no empty folder behind)."""
        made = not path.exists()
        path.mkdir(parents=True, exist_ok=True)
        manifest = new_manifest(dict(settings), row_shape, [], [], False, reductions)
        try:
            with one_line_if_full(path):
                write_manifest(path, manifest)
        except BaseException:
            if made:
                path.rmdir()
            raise
        if sink is not None:
            sink.commit(path, manifest, prune=True)
        return cls(path, manifest, {}, shard_rows, lock, sink=sink)

    @classmethod
    def resume(
        cls,
        path: Path,
        failed: dict[str, str],
        stale: bool,
        shard_rows: int,
        lock: OutputLock | None,
        sink: Sink | None = None,
    ) -> NpyWriter:
        """Reopen an existing output folder, removing files no manifest lists.

        `failed` and `stale` come from reading it (`FeatureFile`)."""
        manifest = json.loads((path / MANIFEST).read_text())
        listed = listed_files(manifest)
        for leftover in path.iterdir():
            if is_own_file(leftover.name) and leftover.name not in listed:
                leftover.unlink()
        manifest["complete"] = manifest["settings"]["complete"] = False
        write_manifest(path, manifest)
        if sink is not None:
            sink.commit(path, manifest, prune=True)
        return cls(path, manifest, failed, shard_rows, lock, stale, sink)

    @property
    def rows(self) -> int:
        return self._rows

    def adopt(self, features: Path, batch: RowBatch) -> None:
        """Append `batch` (its failures too) as a shard of its own whose features are
        `features`, a finished .npy of its rows made on OUT's filesystem by another process
        (Ray's actors): renamed into OUT, not copied. Listed like any shard."""
        self._adopting = features
        try:
            self.write(batch)
        finally:
            self._adopting = None

    def _append(self, batch: RowBatch) -> None:
        if self._adopting is not None and len(batch):
            if list(batch.features.shape[1:]) != list(self._manifest["row_shape"]):
                raise ValueError(f"rows {batch.features.shape} do not fit this output")
            if self._shard is not None:
                self._finish_shard()
            name = self.path / f"shard-{self._next_index():05d}.features.npy"
            os.replace(self._adopting, name)
            self._list_shard(name, len(batch), [_without_features(batch, 0, len(batch))])
            return
        start = 0
        while start < len(batch):
            if self._shard is None:
                name = self.path / f"shard-{self._next_index():05d}.features.npy"
                self._shard = ShardFile(name, batch.features.dtype, batch.features.shape[1:])
            stop = min(len(batch), start + self._shard_rows - self._shard.rows)
            self._shard.append(batch.features[start:stop])
            self._held.append(_without_features(batch, start, stop))
            start = stop
            if self._shard.rows == self._shard_rows:
                self._finish_shard()

    def _next_index(self) -> int:
        """The index of the shard being written (or to be): one past the last listed."""
        return 1 + max((s["index"] for s in self._manifest["shards"]), default=-1)

    def _finish_shard(self) -> None:
        """Put the shard being written in place with its paths and columns, and list it."""
        shard, self._shard = self._shard, None
        held, self._held = self._held, []
        shard.finish()
        self._list_shard(shard.path, shard.rows, held)

    def _list_shard(self, features: Path, rows: int, held: list[RowBatch]) -> None:
        """Write the paths and columns of the shard whose features are in place, and list it."""
        index = self._next_index()
        entry: dict = {"index": index, "rows": rows, "features": features.name}
        arrays = {"paths": np.array([key for b in held for key in b.keys], dtype=str)}  # '<U…'
        if held[0].scales is not None:
            arrays["scales"] = np.concatenate([b.scales for b in held])
        arrays.update(concat_columns([(len(b), b.columns) for b in held]))
        for name, array in arrays.items():
            file_name = f"shard-{index:05d}.{name}.npy"
            write_atomic(self.path / file_name, array)
            entry[name] = file_name
        self._manifest["shards"].append(entry)
        for b in held:
            add_losses(self.reductions, b.errors, b.energy)
        if self.reductions:
            self._manifest["reductions"] = self.reductions
        self._rows += rows
        self._write_manifest()

    def _write_manifest(self, prune: bool = False) -> None:
        """The manifest, after a file with the failure records it does not list yet."""
        if self._log:
            name = write_failed(self.path, self._log, self._failed_index)
            self._manifest["failed_files"].append(name)
            self._failed_index += 1
            self._log = []
        write_manifest(self.path, self._manifest)
        if self._sink is not None:
            self._sink.commit(self.path, self._manifest, prune)

    def _close(self, complete: bool) -> None:
        if self._shard is not None:
            self._finish_shard()
        old = self._manifest["failed_files"]
        if self._stale or len(old) > 1:  # one record per failed key, in one file
            self._log = list(self.failed.items())
            self._manifest["failed_files"] = []
        else:
            old = []
        self._manifest["complete"] = self._manifest["settings"]["complete"] = complete
        self._write_manifest(prune=bool(old))
        for name in old:
            (self.path / name).unlink(missing_ok=True)


def _without_features(batch: RowBatch, start: int, stop: int) -> RowBatch:
    """Rows start:stop of `batch` without their features (already in the shard file)."""

    def rows_of(values: np.ndarray | None) -> np.ndarray | None:
        return None if values is None else values[start:stop]

    return RowBatch(
        keys=batch.keys[start:stop],
        features=None,
        columns={name: values[start:stop] for name, values in batch.columns.items()},
        scales=rows_of(batch.scales),
        errors=rows_of(batch.errors),
        energy=rows_of(batch.energy),
    )
