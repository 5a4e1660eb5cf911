"""Opening an extract output of either format for reading (`open_features`), and telling
what a path holds.

Used by resume, `viz`, `pca`, merge and `info`. Plain h5py/numpy readers need none of
this; see docs/format.md for that. Only rows that a writer committed are shown: in HDF5 the
first `rows` (root attribute), in npy the shards the manifest lists.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py

from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.output.features import FeatureFile, not_ours
from sapiens2_cli.output.hdf5.reader import H5Features
from sapiens2_cli.output.npy.reader import Folder, NpyFeatures
from sapiens2_cli.output.npy.writer import MANIFEST, MANIFEST_FORMAT
from sapiens2_cli.remote import is_url, local_path

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def detect_format(path: str | Path) -> str | None:
    """'h5' or 'npy' for an existing output, None if nothing is there (or it is not ours)."""
    path = Path(path)
    if path.is_dir():
        return "npy" if (path / MANIFEST).is_file() else None
    if path.is_file():
        with open(path, "rb") as f:
            return "h5" if f.read(8) == HDF5_SIGNATURE else None
    return None


def is_output(path: str | Path) -> bool:
    """Whether `path` carries this tool's format markers (an HDF5 file with `features` and a
    `format_version` attribute; a folder whose manifest says it is ours): what --overwrite
    may replace. Any other HDF5 file or folder is someone else's."""
    path = Path(path)
    try:
        if detect_format(path) == "h5":
            with h5py.File(path, "r", locking=False) as f:
                return "features" in f and "format_version" in f.attrs
        if detect_format(path) == "npy":
            manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
            return isinstance(manifest, dict) and manifest.get("format") == MANIFEST_FORMAT
    except (OSError, ValueError):
        pass
    return False


def open_features(path: str | Path) -> FeatureFile:
    """Open an extract output (HDF5 file or npy folder, or an npy output's URL:
    `s3://bucket/feats/`) for reading; use it as a context."""
    if is_url(str(path)):
        from sapiens2_cli.output.url.store import Store  # fsspec only for URLs

        store = Store(str(path))
        return NpyFeatures(store, store)
    path = Path(local_path(str(path)))
    if not path.exists():
        raise Sapiens2Error(f"{path} does not exist: pass the -o path of a `sapiens2 extract` run")
    kind = detect_format(path)
    if kind == "h5":
        return H5Features(path)
    if kind == "npy":
        return NpyFeatures(path, Folder(path))
    raise not_ours(path, "neither an HDF5 file nor a folder with a manifest.json")
