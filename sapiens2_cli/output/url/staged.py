"""npy output to an object store: written in a local staging folder, each commit uploaded.

The npy writer works as ever in a temporary folder; after each of its commits `Upload`
puts the files the manifest lists that the store lacks (a shard's features, paths,
columns, failure records), then the manifest. A PUT is atomic, so the manifest object is
the commit, as the rename is locally: a kill leaves at most unlisted objects, which the
next run's first commit removes (only objects named as this tool names its files). A
features file leaves the staging folder once uploaded, so it holds one shard at a time.

A resume downloads the manifest and the small files it lists (never the features), so the
checks and the writer see an ordinary output folder. Object stores have no lock that a
kill -9 lets go of: two runs writing one prefix at once are the user's to avoid.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.output.npy.writer import MANIFEST, is_own_file, listed_files
from sapiens2_cli.output.url.store import Store


def _is_features(name: str) -> bool:
    return name.endswith(".features.npy")


class Upload:
    """The `Sink` of an NpyWriter writing for `store`: see the module docstring."""

    def __init__(self, store: Store, uploaded: set[str]) -> None:
        self.store = store
        self._uploaded = set(uploaded)  # listed files the store holds

    def commit(self, folder: Path, manifest: dict, prune: bool = False) -> None:
        listed = listed_files(manifest)
        for name in sorted(listed - self._uploaded - {MANIFEST}):
            self.store.put(folder / name, name)
            self._uploaded.add(name)
            if _is_features(name):
                (folder / name).unlink()
        self.store.put(folder / MANIFEST, MANIFEST)
        if prune:
            self.store.remove([n for n in self.store.names() if is_own_file(n) and n not in listed])
            self._uploaded &= listed


@contextlib.contextmanager
def staged_output(url: str, overwrite: bool) -> Iterator[tuple[Path, Upload]]:
    """A staging folder standing for the npy output at `url` (an existing one's manifest
    and small files in it, unless `overwrite`), and the Upload a writer of it commits to;
    the folder goes afterwards. A prefix holding other objects and no manifest is refused."""
    store = Store(url)
    names = store.names()
    if MANIFEST not in names and not all(map(is_own_file, names)):
        raise Sapiens2Error(
            f"{url} holds other objects, not a sapiens2 extract output: choose a new -o prefix"
        )
    with tempfile.TemporaryDirectory(prefix="sapiens2-staging-") as tmp:
        folder, uploaded = Path(tmp), set()
        if MANIFEST in names and not overwrite:
            data = store.read(MANIFEST)
            with contextlib.suppress(ValueError, KeyError, TypeError):
                uploaded = listed_files(json.loads(data)) & set(names)
            for name in sorted(uploaded - {MANIFEST}):
                if not _is_features(name):
                    (folder / name).write_bytes(store.read(name))
            (folder / MANIFEST).write_bytes(data)  # last, as a commit: the reader checks it
        yield folder, Upload(store, uploaded)
