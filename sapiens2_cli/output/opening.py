"""What OUT may be and how a run opens it: the format from its name, the refusal of paths
that cannot be written or hold someone else's files, --overwrite's removal, and `open_writer`,
which locks OUT and then starts a new output or resumes an existing one (whose settings, a
virtual join's included, engine/resume.py has checked against the run's).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from sapiens2_cli.config.choices import OutputFormat
from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.output.disk import nearest_folder
from sapiens2_cli.output.hdf5.writer import H5Writer
from sapiens2_cli.output.lock import OutputLock
from sapiens2_cli.output.npy.writer import NpyWriter, Sink, default_shard_rows, is_own_file
from sapiens2_cli.output.reader import detect_format, is_output, open_features
from sapiens2_cli.output.writer import FeatureWriter

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
    """Refuse, before any work, an OUT that cannot be written or would clobber someone's files.

    Only what this tool wrote (recognised by its format markers, `is_output`) is resumed or
    replaced by --overwrite; any other file, or a folder of other files, is left alone."""
    existing = detect_format(path) if is_output(path) else None
    if existing is not None:
        if existing != fmt and not overwrite:
            raise Sapiens2Error(
                f"{path} holds {existing} output but --format {fmt} was asked for: pass "
                f"--format {existing} to resume it or --overwrite to replace it"
            )
    elif path.is_dir():
        if fmt == "h5":
            raise Sapiens2Error(f"{path} is a folder: give -o a file name ending in .h5")
        _check_own_folder(path)
    elif path.exists():
        raise _not_replaceable(path)
    folder = nearest_folder(path)
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


def _check_own_folder(path: Path) -> None:
    if any(not is_own_file(p.name) for p in path.iterdir()):
        raise Sapiens2Error(
            f"{path} is a folder of other files, not a sapiens2 extract output: "
            "choose a new -o path"
        )


def _not_replaceable(path: Path) -> Sapiens2Error:
    return Sapiens2Error(
        f"{path} exists and is not a sapiens2 extract output, which neither a resume nor "
        "--overwrite replaces: choose another -o path"
    )


def remove_output(path: Path) -> None:
    """Delete an output for --overwrite: only files this tool wrote. Anything else at `path`
    is refused before anything is touched."""
    if path.is_dir():
        if not is_output(path):
            _check_own_folder(path)
        for p in path.iterdir():
            if is_own_file(p.name):
                p.unlink()
        if not any(path.iterdir()):
            path.rmdir()
    elif path.exists():
        if not is_output(path):
            raise _not_replaceable(path)
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
    reductions: dict | None = None,
    sink: Sink | None = None,
) -> tuple[FeatureWriter, set[str]]:
    """A writer for `path` and the keys it already holds (empty unless resuming); npy
    commits also go to `sink` (`path` then stages a URL OUT: output/url/staged.py).

    `reductions` starts a new output's record of them; a resumed one continues its own.

    OUT's lock is taken first, so a second writer stops here, before any work, and
    --overwrite never removes what a running writer is writing. The caller has checked
    that an existing output can take these rows (engine/resume.py);
    `overwrite` replaces it instead.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = OutputLock(path)
    try:
        new = {"compression": compression, "reductions": reductions}
        return _open(path, fmt, settings, row_shape, dtype, overwrite, new, shard_rows, lock, sink)
    except BaseException:
        lock.release()
        raise


def _open(
    path: Path,
    fmt: OutputFormat,
    settings: dict,
    row_shape: tuple[int, ...],
    dtype: np.dtype,
    overwrite: bool,
    new: dict,
    shard_rows: int | None,
    lock: OutputLock,
    sink: Sink | None,
) -> tuple[FeatureWriter, set[str]]:
    """`new`: the compression and reductions a new output gets."""
    if overwrite:
        remove_output(path)
    shard_rows = shard_rows or _shard_rows(row_shape, dtype)
    reductions = new["reductions"]
    if detect_format(path) is None:
        if fmt == "h5":
            writer = H5Writer.create(
                path, settings, row_shape, dtype, new["compression"], lock, reductions
            )
            return writer, set()
        writer = NpyWriter.create(path, settings, row_shape, shard_rows, lock, reductions, sink)
        return writer, set()
    with open_features(path) as existing:
        done = set(existing.paths)
        failed = dict(existing.failed)
        stale = existing.failed_records != len(failed)  # the log has superseded records
    if fmt == "h5":
        return H5Writer(path, failed, lock, stale), done
    return NpyWriter.resume(path, failed, stale, shard_rows, lock, sink), done


def _shard_rows(row_shape: tuple[int, ...], dtype: np.dtype) -> int:
    return default_shard_rows(int(np.prod(row_shape)) * np.dtype(dtype).itemsize)
