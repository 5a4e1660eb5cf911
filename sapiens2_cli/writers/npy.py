"""npy output: a folder of plain .npy shards and a manifest.json listing the finished ones.

Rows collect in memory until a shard is full (or the run ends); the shard's files are then
written under temporary names, fsynced and renamed, and only after that is the manifest
rewritten the same way to list it. A kill loses at most the shard in progress, which a
rerun recomputes; files no manifest lists are leftovers of such a kill and are removed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from sapiens2_cli.writers.base import (
    FORMAT_VERSION,
    LOCK_NAME,
    FeatureWriter,
    RowBatch,
    concat_columns,
    fsync_dir,
    lock_file,
)

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "sapiens2-features-npy"
SHARD_BYTES = 256 * 2**20  # default shard size: about this many bytes of features
MAX_SHARD_ROWS = 4096


def default_shard_rows(row_bytes: int) -> int:
    """Rows per shard so a shard holds about SHARD_BYTES of features."""
    return max(1, min(MAX_SHARD_ROWS, SHARD_BYTES // max(1, row_bytes)))


def is_own_file(name: str) -> bool:
    """Files this writer makes inside OUT (the only ones --overwrite may delete)."""
    return name in (MANIFEST, LOCK_NAME) or name.startswith(("shard-", MANIFEST + "."))


def _write_atomic(path: Path, write) -> None:
    """write(file) to a temporary name, fsync, rename over `path`."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_manifest(folder: Path, manifest: dict) -> None:
    _write_atomic(folder / MANIFEST, lambda f: f.write(json.dumps(manifest, indent=1).encode()))
    fsync_dir(folder)


def new_manifest(
    settings: dict, shards: list[dict], failed: dict[str, str], complete: bool
) -> dict:
    """The manifest.json an output folder holds (docs/format.md)."""
    return {
        "format": MANIFEST_FORMAT,
        "format_version": FORMAT_VERSION,
        "settings": settings,
        "shards": shards,
        "failed": [{"path": p, "error": e} for p, e in failed.items()],
        "complete": complete,
    }


class NpyWriter(FeatureWriter):
    """Appends rows as shards in a folder; see the module docstring for the commit protocol."""

    def __init__(self, path: Path, manifest: dict, shard_rows: int, lock: int) -> None:
        super().__init__(path, {item["path"]: item["error"] for item in manifest["failed"]})
        self._lock = lock
        self._manifest = manifest
        self._shard_rows = shard_rows
        self._pending: list[RowBatch] = []
        self._rows = sum(s["rows"] for s in manifest["shards"])

    @classmethod
    def create(cls, path: Path, settings: dict, shard_rows: int) -> NpyWriter:
        """A new, empty output folder at `path`."""
        path.mkdir(parents=True, exist_ok=True)
        lock = lock_file(path / LOCK_NAME)
        manifest = new_manifest(dict(settings), [], {}, complete=False)
        write_manifest(path, manifest)
        return cls(path, manifest, shard_rows, lock)

    @classmethod
    def resume(cls, path: Path, shard_rows: int) -> NpyWriter:
        """Reopen an existing output folder, removing files no manifest lists."""
        lock = lock_file(path / LOCK_NAME)
        manifest = json.loads((path / MANIFEST).read_text())
        listed = {MANIFEST, LOCK_NAME} | {
            name for shard in manifest["shards"] for key, name in shard.items() if key != "index"
        }
        for leftover in path.iterdir():
            if is_own_file(leftover.name) and leftover.name not in listed:
                leftover.unlink()
        manifest["complete"] = manifest["settings"]["complete"] = False
        write_manifest(path, manifest)
        return cls(path, manifest, shard_rows, lock)

    @property
    def rows(self) -> int:
        return self._rows

    def _append(self, batch: RowBatch) -> None:
        if len(batch):
            self._pending.append(batch)
        while sum(map(len, self._pending)) >= self._shard_rows:
            self._flush_shard(self._shard_rows)

    def _flush_shard(self, rows: int) -> None:
        """Write the first `rows` pending rows as one shard and list it in the manifest."""
        taken, kept, count = [], [], 0
        for batch in self._pending:
            if count >= rows:
                kept.append(batch)
                continue
            take = min(len(batch), rows - count)
            taken.append(_slice(batch, 0, take))
            if take < len(batch):
                kept.append(_slice(batch, take, len(batch)))
            count += take
        self._pending = kept
        index = 1 + max((s["index"] for s in self._manifest["shards"]), default=-1)
        columns = {
            "features": np.concatenate([b.features for b in taken]),
            "paths": np.array([p for b in taken for p in b.keys], dtype=str),  # '<U…'
            **concat_columns([(len(b), b.columns) for b in taken]),
        }
        entry: dict = {"index": index, "rows": count}
        for name, array in columns.items():
            file_name = f"shard-{index:05d}.{name}.npy"
            _write_atomic(self.path / file_name, lambda f, a=array: np.save(f, a))
            entry[name] = file_name
        self._manifest["shards"].append(entry)
        self._rows += count
        self._write_manifest()

    def _write_manifest(self) -> None:
        self._manifest["failed"] = [{"path": p, "error": e} for p, e in self.failed.items()]
        write_manifest(self.path, self._manifest)

    def _close(self, complete: bool) -> None:
        try:
            pending = sum(map(len, self._pending))
            if pending:
                self._flush_shard(pending)
            self._manifest["complete"] = self._manifest["settings"]["complete"] = complete
            self._write_manifest()
        finally:
            os.close(self._lock)


def _slice(batch: RowBatch, start: int, stop: int) -> RowBatch:
    return RowBatch(
        keys=batch.keys[start:stop],
        features=batch.features[start:stop],
        columns={name: data[start:stop] for name, data in batch.columns.items()},
    )
