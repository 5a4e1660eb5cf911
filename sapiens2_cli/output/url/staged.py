"""npy output to an object store: written in a local staging folder, each commit uploaded.

The npy writer works as ever in a temporary folder; after each of its commits `Upload`
puts the files the manifest lists that the store lacks (a shard's features, paths,
columns, failure records), then the manifest. A PUT is atomic, so the manifest object is
the commit, as the rename is locally: a kill leaves at most unlisted objects, which the
next run's first commit removes (only objects named as this tool names its files). A
features file leaves the staging folder once uploaded, so it holds one shard at a time.

A resume downloads the manifest and the small files it lists (never the features), so the
checks and the writer see an ordinary output folder.

Object stores have no lock that a kill -9 lets go of, so every upload is conditional
instead: a shard's files are created only where no object has their name, and the manifest
is put only if it is still the version this run last read or wrote. Of two runs on one
prefix, the one whose commit comes second stops with one line (`conflict`), having
overwritten nothing; a store without conditional writes is refused unless the user
accepts the risk (`check_guarded`).
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.output.npy.writer import MANIFEST, is_own_file, listed_files
from sapiens2_cli.output.url.store import Conflict, Store


def _is_features(name: str) -> bool:
    return name.endswith(".features.npy")


def conflict(url: str) -> Sapiens2Error:
    return Sapiens2Error(
        f"another run committed to {url} while this one was writing to it (two runs on one "
        "prefix): this run stopped, and what either run committed is kept; run this command "
        "again once the other has finished, and it adds what this run had left to do"
    )


class Upload:
    """The `Sink` of an NpyWriter writing for `store`: see the module docstring.

    `version` is the ETag of the manifest this run last saw or wrote (None: there was
    none); every commit is conditional on it, so a commit of another run in between stops
    this one (`conflict`) instead of being overwritten."""

    def __init__(self, store: Store, uploaded: set[str], version: str | None) -> None:
        self.store = store
        self._uploaded = set(uploaded)  # listed files the store holds
        self._version = version

    def commit(self, folder: Path, manifest: dict, prune: bool = False) -> None:
        listed = listed_files(manifest)
        try:
            for name in sorted(listed - self._uploaded - {MANIFEST}):
                self.store.put(folder / name, name, create=True)
                self._uploaded.add(name)
                if _is_features(name):
                    (folder / name).unlink()
            data = (folder / MANIFEST).read_bytes()
            self._version = self.store.commit(data, MANIFEST, self._version)
            if prune:
                names = self.store.names()
                if self.store.guarded and self.store.version(MANIFEST) != self._version:
                    raise Conflict(self.store.url)  # another run's files may be listed now
                self.store.remove([n for n in names if is_own_file(n) and n not in listed])
                self._uploaded &= listed
        except Conflict:
            raise conflict(self.store.url) from None


def check_guarded(store: Store, unguarded: bool) -> None:
    """Refuse, before any work, a store whose commits cannot be made conditional, unless
    the user accepted the risk (`--unguarded-commits`)."""
    if not store.guarded and not unguarded:
        raise Sapiens2Error(
            f"{store.url}: this store takes no conditional writes, so a second run writing "
            "the same prefix at once would silently lose rows: write locally and copy, or "
            "pass --unguarded-commits if no two runs ever write this prefix at once"
        )


@contextlib.contextmanager
def staged_output(
    url: str, overwrite: bool, unguarded: bool = False
) -> Iterator[tuple[Path, Upload]]:
    """A staging folder standing for the npy output at `url` (an existing one's manifest
    and small files in it, unless `overwrite`), and the Upload a writer of it commits to;
    the folder goes afterwards. A prefix holding other objects and no manifest is refused,
    and so is a store without conditional writes unless `unguarded`."""
    store = Store(url)
    check_guarded(store, unguarded)
    try:
        names = store.names()
    except FileNotFoundError as e:  # the bucket itself
        raise Sapiens2Error(
            f"cannot write {url}: {e.strerror or 'its bucket does not exist'} (no such "
            "bucket?): create the bucket first, or check the URL"
        ) from None
    if MANIFEST not in names and not all(map(is_own_file, names)):
        raise Sapiens2Error(
            f"{url} holds other objects, not a sapiens2 extract output: choose a new -o prefix"
        )
    with tempfile.TemporaryDirectory(prefix="sapiens2-staging-") as tmp:
        folder, uploaded, version = Path(tmp), set(), None
        if MANIFEST in names:
            data, version = store.read_versioned(MANIFEST)
        if MANIFEST in names and not overwrite:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                uploaded = listed_files(json.loads(data)) & set(names)
            for name in sorted(uploaded - {MANIFEST}):
                if not _is_features(name):
                    (folder / name).write_bytes(store.read(name))
            (folder / MANIFEST).write_bytes(data)  # last, as a commit: the reader checks it
        yield folder, Upload(store, uploaded, version)
