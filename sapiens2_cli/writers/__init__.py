"""Output writers (HDF5, npy shards), the reader, and how a run opens its output.

`open_writer` either starts a new output or resumes an existing one after checking that
it was made with the same settings.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from sapiens2_cli.choices import OutputFormat
from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.writers.base import FeatureWriter, RowBatch
from sapiens2_cli.writers.hdf5 import H5Writer
from sapiens2_cli.writers.npy import NpyWriter, default_shard_rows, is_own_file
from sapiens2_cli.writers.reader import FeatureFile, detect_format, open_features

H5_SUFFIXES = (".h5", ".hdf5")


def infer_format(path: Path, fmt: OutputFormat | str | None) -> OutputFormat:
    """`--format`, or from OUT: .h5/.hdf5 -> HDF5, anything else a folder of npy shards."""
    if fmt is None:
        return OutputFormat.H5 if path.suffix.lower() in H5_SUFFIXES else OutputFormat.NPY
    return OutputFormat.parse(fmt, "--format")


def existing_settings(path: Path) -> dict | None:
    """The settings of the extract output at `path`, or None when there is none."""
    if detect_format(path) is None:
        return None
    with open_features(path) as existing:
        return dict(existing.settings)


def check_output_path(path: Path, fmt: OutputFormat, overwrite: bool) -> None:
    """Refuse, before any work, an OUT that cannot be written or would clobber someone's files."""
    existing = detect_format(path)
    if existing is not None:
        if existing != fmt and not overwrite:
            raise Sapiens2Error(
                f"{path} holds {existing} output but --format {fmt} was asked for: pass "
                f"--format {existing} to resume it or --overwrite to replace it"
            )
    elif path.is_dir():
        if fmt == "h5":
            raise Sapiens2Error(f"{path} is a folder: give -o a file name ending in .h5")
        if any(not is_own_file(p.name) for p in path.iterdir()):
            raise Sapiens2Error(
                f"{path} is a folder of other files, not a sapiens2 extract output: "
                "choose a new -o path"
            )
    elif path.exists() and not overwrite:
        raise Sapiens2Error(
            f"{path} exists and is not a sapiens2 extract output: choose another -o path "
            "or pass --overwrite to replace it"
        )
    folder = next(p for p in (path, *path.parents) if p.is_dir())
    blocking = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise Sapiens2Error(
            f"cannot write {path}: {blocking} is a file, not a folder; choose another -o"
        )
    try:  # a real file, since permission bits say nothing of /proc, read-only mounts, quotas
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise Sapiens2Error(
            f"cannot write {path}: {folder} is not writable ({e.strerror}); choose another -o"
        ) from None


def remove_output(path: Path) -> None:
    """Delete an output for --overwrite: a file, or only this tool's files in a folder."""
    if path.is_dir():
        for p in path.iterdir():
            if is_own_file(p.name):
                p.unlink()
        if not any(path.iterdir()):
            path.rmdir()
    elif path.exists():
        path.unlink()


def open_writer(
    path: Path,
    fmt: OutputFormat,
    settings: dict,
    row_shape: tuple[int, ...],
    dtype: np.dtype,
    *,
    overwrite: bool = False,
    compression: str | None = None,
    shard_rows: int | None = None,
) -> tuple[FeatureWriter, set[str]]:
    """A writer for `path` and the keys it already holds (empty unless resuming).

    The caller has checked that an existing output's settings match (`existing_settings`);
    `overwrite` replaces it instead.
    """
    if overwrite:
        remove_output(path)
    if detect_format(path) is not None:
        with open_features(path) as existing:
            if existing.settings.get("merge") == "virtual":
                raise Sapiens2Error(
                    f"{path} is a virtual join of parts, which cannot grow: rerun the "
                    "torchrun or --shard commands that made it to resume, or pass --overwrite"
                )
            done = set(existing.paths)
            failed = dict(existing.failed)
        if fmt == "h5":
            return H5Writer.resume(path, failed), done
        return NpyWriter.resume(path, shard_rows or _shard_rows(row_shape, dtype)), done
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "h5":
        return H5Writer.create(path, settings, row_shape, dtype, compression), set()
    return NpyWriter.create(path, settings, shard_rows or _shard_rows(row_shape, dtype)), set()


def _shard_rows(row_shape: tuple[int, ...], dtype: np.dtype) -> int:
    return default_shard_rows(int(np.prod(row_shape)) * np.dtype(dtype).itemsize)


__all__ = [
    "FeatureFile",
    "FeatureWriter",
    "OutputFormat",
    "RowBatch",
    "check_output_path",
    "existing_settings",
    "infer_format",
    "open_features",
    "open_writer",
]
