"""Reading an npy output: the shards its manifest lists (committed ones only), from a local
folder or, through the same three calls, from an object store (output/url/store.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

import numpy as np

from sapiens2_cli.output.features import FeatureFile, check_version, missing_part, not_ours, replay
from sapiens2_cli.output.npy.writer import MANIFEST, MANIFEST_FORMAT
from sapiens2_cli.output.rows import concat_columns

#: A shard's files that are not per-row columns.
SHARD_FILES = frozenset({"index", "rows", "features", "scales", "paths"})


class Files(Protocol):
    """An npy output's files by name: a local folder (`Folder`), or a URL prefix's objects
    (output/url/store.py's Store)."""

    def read(self, name: str) -> bytes: ...

    def load(self, name: str) -> np.ndarray: ...

    def array(self, name: str) -> np.ndarray: ...


class Folder:
    """A local npy output's files, by name."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self, name: str) -> bytes:
        return (self.path / name).read_bytes()

    def load(self, name: str) -> np.ndarray:
        return np.load(self.path / name)

    def array(self, name: str) -> np.ndarray:
        return np.load(self.path / name, mmap_mode="r")


class NpyFeatures(FeatureFile):
    def __init__(self, path: object, folder: Files) -> None:
        """`path`: where the output is, as messages name it; `folder`: its files."""
        try:
            manifest = json.loads(folder.read(MANIFEST).decode("utf-8"))
        except (OSError, ValueError) as e:
            raise not_ours(path, f"its {MANIFEST} cannot be read: {e}") from None
        if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
            raise not_ours(path, f"its {MANIFEST} is not a {MANIFEST_FORMAT} manifest")
        check_version(path, manifest.get("format_version"))
        self._path, self._folder = path, folder
        self._shards = shards = manifest["shards"]
        self.settings = manifest["settings"]
        self.reductions = manifest.get("reductions", {})
        try:
            records = [
                (r["path"], r["error"])
                for name in manifest["failed_files"]
                for r in json.loads(folder.read(name))
            ]
            self.paths = [p for s in shards for p in folder.load(s["paths"]).tolist()]
            self._columns = concat_columns(
                [
                    (
                        s["rows"],
                        {k: folder.load(f) for k, f in s.items() if k not in SHARD_FILES},
                    )
                    for s in shards
                ]
            )
        except FileNotFoundError as e:
            raise missing_part(path, e.filename) from None
        self.failed = replay(records)
        self.failed_records = len(records)
        self.row_shape = tuple(manifest["row_shape"])
        self._starts = np.cumsum([0] + [s["rows"] for s in shards])  # row offset per shard
        self._open: dict[tuple[int, str], np.ndarray] = {}  # by (shard, name)

    def _shard(self, k: int, name: str) -> np.ndarray:
        """Shard `k`'s `name` file (features, scales): a memory map, or ranged reads at a URL."""
        if (k, name) not in self._open:
            self._open[k, name] = self._folder.array(self._shards[k][name])
        return self._open[k, name]

    def _read_sorted(self, index: np.ndarray, name: str) -> np.ndarray:
        shard_of = np.searchsorted(self._starts, index, side="right") - 1
        pieces = [
            np.asarray(self._shard(k, name)[index[shard_of == k] - self._starts[k]])
            for k in np.unique(shard_of)
        ]
        return np.concatenate(pieces)
