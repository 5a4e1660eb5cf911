"""An npy output's prefix in an object store (`s3://bucket/feats/`), file by file.

What the reader and the staged writer (output/url/staged.py) need of a store: list the
prefix (one paginated listing), read an object, read rows of a .npy object by ranged GETs
(its header once, then one range per run of consecutive rows, fetched concurrently), put
a local file, remove objects. Everything goes through fsspec (remote.py), whose
errors reach the user as one line; a missing object stays FileNotFoundError, which the
reader turns into its own line naming the file.
"""

from __future__ import annotations

import contextlib
import errno
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from sapiens2_cli.remote import errors, filesystem


@contextlib.contextmanager
def _reaching(url: str) -> Iterator[None]:
    """remote.errors, but a missing object stays FileNotFoundError (naming `url`), which
    the reader turns into its own line."""
    try:
        yield
    except Conflict:
        raise
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, "no such object", url) from None
    except Exception as e:
        with errors(url):
            raise e from None


class Conflict(Exception):
    """A conditional write refused: another writer changed the object (or made it) first."""


#: What S3 (and moto) answer a conditional PUT whose condition does not hold.
_REFUSED = ("PreconditionFailed", "ConditionalRequestConflict", "412", "409")


def _refused(error: BaseException) -> bool:
    """Whether `error` (as s3fs raises it: the botocore error as its cause) is a
    conditional write refused."""
    if isinstance(error, FileExistsError):  # s3fs's word for If-None-Match refused
        return True
    while error is not None:
        code = str(getattr(error, "response", {}).get("Error", {}).get("Code", ""))
        if code in _REFUSED or "pre-condition" in str(error):
            return True
        error = error.__cause__
    return False


@contextlib.contextmanager
def _conflicts(url: str) -> Iterator[None]:
    try:
        yield
    except Exception as e:
        if _refused(e):
            raise Conflict(url) from None
        raise


class Store:
    """The objects under one prefix, named as the files of a local output folder."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.fs, root = filesystem(url)
        self.root = root.rstrip("/")

    def __str__(self) -> str:
        return self.url

    def _key(self, name: str) -> str:
        return f"{self.root}/{name}"

    def names(self) -> list[str]:
        """Every object under the prefix, relative to it (nested ones as `a/b`)."""
        with _reaching(self.url):
            self.fs.invalidate_cache(self.root)
            found = self.fs.find(self.root, withdirs=False)
        return [name[len(self.root) + 1 :] for name in found if name.startswith(self.root + "/")]

    def read(self, name: str) -> bytes:
        with _reaching(f"{self.url}/{name}"):
            return self.fs.cat_file(self._key(name))

    def load(self, name: str) -> np.ndarray:
        """A small .npy object, read whole."""
        return np.load(io.BytesIO(self.read(name)))

    def array(self, name: str) -> RangeArray:
        """A .npy object whose rows are read when indexed."""
        with _reaching(f"{self.url}/{name}"):
            return RangeArray(self.fs, self._key(name))

    @property
    def guarded(self) -> bool:
        """Whether this store takes conditional writes (`commit`, `put(create=True)`)."""
        return hasattr(self.fs, "call_s3")  # s3fs: If-Match / If-None-Match on PUT

    def put(self, local: Path, name: str, create: bool = False) -> None:
        """Upload `local` as `name`; `create`: only if no object has that name (another
        run's file is never overwritten), else `Conflict`."""
        with _reaching(self.url), _conflicts(self.url):
            if create and self.guarded:
                self.fs.put_file(str(local), self._key(name), mode="create")
            else:
                self.fs.put_file(str(local), self._key(name))

    def version(self, name: str) -> str | None:
        """The ETag of object `name`, None if there is none."""
        with _reaching(f"{self.url}/{name}"):
            try:
                return self.fs.info(self._key(name), refresh=True)["ETag"]
            except FileNotFoundError:
                return None

    def read_versioned(self, name: str) -> tuple[bytes, str | None]:
        """Object `name`'s bytes and the ETag of exactly those bytes (read again if another
        writer replaced it meanwhile); no version (None) from a store without conditional
        writes, which `commit` then does not ask for."""
        if not self.guarded:
            return self.read(name), None
        while True:
            version = self.version(name)
            data = self.read(name)
            if version is not None and self.version(name) == version:
                return data, version

    def commit(self, data: bytes, name: str, version: str | None) -> str | None:
        """Put `data` as `name` only if the object is still at `version` (None: only if
        there is none); its new version, or `Conflict` if another writer got there first.
        A store without conditional writes takes a plain put (the user accepted the risk:
        `staged.check_guarded`), and gives no version."""
        if not self.guarded:
            with _reaching(self.url):
                self.fs.pipe_file(self._key(name), data)
            return None
        bucket, key, _ = self.fs.split_path(self._key(name))
        match = {"IfNoneMatch": "*"} if version is None else {"IfMatch": version}
        with _reaching(self.url), _conflicts(self.url):
            done = self.fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, **match)
        self.fs.invalidate_cache(self._key(name))
        return done["ETag"]

    def remove(self, names: list[str]) -> None:
        if names:
            with _reaching(self.url):
                self.fs.rm([self._key(name) for name in names])


class RangeArray:
    """The rows of a C-order .npy object, read by ranged GETs: `array[sorted_indices]`."""

    def __init__(self, fs: object, key: str) -> None:
        self._fs, self._key, self._url = fs, key, fs.unstrip_protocol(key)
        with fs.open(key, "rb", block_size=2**16) as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                read_header = np.lib.format.read_array_header_1_0
            else:
                read_header = np.lib.format.read_array_header_2_0
            self.shape, fortran, self.dtype = read_header(f)
            self._offset = f.tell()
        if fortran:
            raise ValueError(f"{key} is in Fortran order; a sapiens2 shard never is")
        self._row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: np.ndarray) -> np.ndarray:
        """Rows at strictly increasing `index`: one range per run of consecutive rows."""
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        runs = np.split(index, np.flatnonzero(np.diff(index) != 1) + 1)
        starts = [self._offset + int(run[0]) * self._row_bytes for run in runs]
        ends = [self._offset + (int(run[-1]) + 1) * self._row_bytes for run in runs]
        with _reaching(self._url):
            data = self._fs.cat_ranges([self._key] * len(runs), starts, ends, on_error="raise")
        rows = np.frombuffer(b"".join(data), dtype=self.dtype)
        return rows.reshape(len(index), *self.shape[1:])
