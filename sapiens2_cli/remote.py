"""Inputs behind URLs (`s3://`, `gs://`, `hf://`, `http(s)://`), read through fsspec.

Each scheme's filesystem package is an extra (`s3fs`: `[s3]`, `gcsfs`: `[gcs]`, aiohttp for
http: `[http]`; `hf://` comes with huggingface_hub), imported only when such a URL is met,
so local runs and `--help` never load fsspec. Credentials and endpoints come from where the
package looks itself (`AWS_ENDPOINT_URL`, `AWS_PROFILE`, `~/.aws`, fsspec's config, ...):
a URL carrying credentials is refused, since it would stay in shell history and in OUT.

A URL's identity (its key) is the URL as the filesystem names it (`s3://bucket/key`).
A prefix is listed with one paginated listing (`fs.find`); objects are opened in the
decode workers, with a read-ahead cache of `BLOCK_SIZE` bytes.
"""

from __future__ import annotations

import contextlib
import importlib
import re
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.text import one_line

#: Read-ahead of an object opened for streaming (a tar shard, a video, a Parquet file):
#: each ranged GET asks for at least this much, so a shard of small members is a few GETs.
BLOCK_SIZE = 4 * 2**20

#: Scheme -> (the package implementing it, the extra installing it; None: a dependency).
_PACKAGES = {
    "s3": ("s3fs", "s3"),
    "s3a": ("s3fs", "s3"),
    "gs": ("gcsfs", "gcs"),
    "gcs": ("gcsfs", "gcs"),
    "hf": ("huggingface_hub", None),
    "http": ("aiohttp", "http"),
    "https": ("aiohttp", "http"),
}
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]+)://")


def scheme(path: str) -> str | None:
    """The URL scheme of `path` in lower case, or None for a plain path."""
    match = _SCHEME.match(path)
    return match[1].lower() if match else None


def is_url(path: str) -> bool:
    """Whether `path` is read through fsspec (`file://` is a local path: `local_path`)."""
    return scheme(path) not in (None, "file")


def local_path(path: str) -> str:
    """A `file://` URL as the local path it names; anything else unchanged."""
    return urlsplit(path).path if scheme(path) == "file" else path


def check_url(url: str) -> None:
    """Raise Sapiens2Error, before any work, for credentials written into `url` or a
    missing extra for its scheme (asks no server: a URL taken from a list unlisted is
    checked so, not per object in the decode workers)."""
    name = scheme(url)
    if "@" in urlsplit(url).netloc:
        raise Sapiens2Error(
            f"{name}:// URL carries credentials, which would stay in shell history and in "
            "OUT: give them the filesystem's usual way (environment, config file)"
        )
    package, extra = _PACKAGES.get(name, ("fsspec", None))
    try:
        importlib.import_module(package)  # fsspec would not notice one gone since it loaded
        importlib.import_module("fsspec")
    except ImportError:
        install = f"pip install 'sapiens2-cli[{extra}]'" if extra else f"pip install {package}"
        raise Sapiens2Error(f"{name}:// inputs need {package}: {install}") from None


def filesystem(url: str) -> tuple[Any, str]:
    """(fsspec filesystem, path within it) for `url`; raises Sapiens2Error for a missing
    extra, an unknown scheme or credentials written into the URL."""
    check_url(url)
    import fsspec

    try:
        return fsspec.core.url_to_fs(url)
    except ValueError as e:
        raise Sapiens2Error(f"cannot read {scheme(url)}:// URLs ({one_line(e)})") from None


@contextlib.contextmanager
def errors(url: str) -> Iterator[None]:
    """Whatever reaching `url` raises (the packages' own exceptions included), as one line."""
    try:
        yield
    except Sapiens2Error:
        raise
    except FileNotFoundError as e:
        raise Sapiens2Error(f"{url} does not exist ({one_line(e)}): check the URL") from None
    except PermissionError as e:
        raise Sapiens2Error(
            f"access to {url} denied ({one_line(e)}): check the credentials (environment, "
            "config files)"
        ) from None
    except Exception as e:  # botocore, aiohttp, ...: the store could not be reached
        if _no_credentials(e):
            raise Sapiens2Error(
                f"no credentials found for {url} ({one_line(e)}): give them the filesystem's "
                "usual way (e.g. AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, "
                "~/.aws/credentials)"
            ) from None
        raise Sapiens2Error(
            f"cannot reach {url} ({one_line(e)}): check the endpoint (e.g. AWS_ENDPOINT_URL) "
            "and the network"
        ) from None


def _no_credentials(error: BaseException | None) -> bool:
    """Whether `error` (or what caused it) says no credentials were found (botocore's
    NoCredentialsError, google.auth's DefaultCredentialsError)."""
    while error is not None:
        if "Credentials" in type(error).__name__:
            return True
        error = error.__cause__ or error.__context__
    return False


def list_objects(url: str, wanted: Callable[[str], bool]) -> list[str]:
    """The objects `url` names: itself if it is one object, else those under it as a
    prefix whose path relative to it `wanted` accepts, sorted by that path."""
    fs, root = filesystem(url)
    with errors(url):
        found = fs.find(root, withdirs=False, detail=True)
    root = root.rstrip("/")
    if list(found) == [root]:
        return [fs.unstrip_protocol(root)]
    if not found:
        raise Sapiens2Error(f"input {url} does not exist (no object, nothing under it)")
    relative = {name[len(root) + 1 :]: name for name in found if name.startswith(root + "/")}
    keep = sorted((rel.split("/"), name) for rel, name in relative.items() if wanted(rel))
    return [fs.unstrip_protocol(name) for _, name in keep]


def read_bytes(url: str, start: int | None = None, end: int | None = None) -> bytes:
    """An object's bytes (from `start` to `end`), in one request."""
    fs, path = filesystem(url)
    return fs.cat_file(path, start=start, end=end)


def open_input(url: str, compression: str | None = None) -> BinaryIO:
    """An object as a seekable binary file read in ranged GETs of `BLOCK_SIZE` read-ahead;
    `compression` ("gzip", "bz2", "xz") decompresses it as it is read, and closing the
    file closes the object too."""
    from fsspec.compression import compr

    fs, path = filesystem(url)
    raw = fs.open(path, "rb", block_size=BLOCK_SIZE, cache_type="readahead")
    if compression is None:
        return raw
    stream = compr[compression](raw, mode="rb")
    close = stream.close

    def close_both() -> None:  # the decompressor leaves a file it did not open open
        close()
        raw.close()

    stream.close = close_both
    return stream
