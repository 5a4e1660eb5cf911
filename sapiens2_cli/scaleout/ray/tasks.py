"""The tasks of a Ray run, and the files one task's rows travel in from its actor to OUT.

A task is consecutive work units of the pending items (engine/loader.py's `work_units`: a
photo's boxes together, a video's frames in runs from one seek, a tar's or Parquet file's
rows in order), packed up to `task_rows` rows: one Ray Data block, decoded by one CPU task
and run by one actor call. Blocks hold uint8 pixels, so `task_rows` bounds them by bytes
(TASK_BYTES, half of Ray Data's 128 MiB target block size, so Ray never splits one) and by
two forward batches (so a fault or a Ctrl-C costs little, and the bar moves).

The actor writes a task's rows into the run's folder beside OUT (so on OUT's filesystem:
an npy OUT takes the features file as a shard by renaming it), `OUT.ray-tasks/<run>/`:
`task-NNNNNN.features.npy` (as stored: float16, float32 or int8) and
`task-NNNNNN.rows.npz` (keys, per-row columns, int8 scales, loss terms), each under a
temporary name, fsynced and renamed. So a task Ray retries (its actor died, its node was
lost) rewrites the same names, and a half-written attempt leaves only a `.tmp`. The
driver reads a task's files only once Ray reports the task done, commits the rows into OUT
with the writer's protocol and deletes what is left of them. Every run folder belongs to one driver;
the next run on OUT (which holds OUT's lock, so no other driver writes there) removes
what a killed one left, files that no commit of OUT ever listed.
"""

from __future__ import annotations

import io
import re
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np

from sapiens2_cli.output import RowBatch
from sapiens2_cli.output.npy.shard_file import write_atomic

#: Decoded pixels per task (one Ray Data block): half Ray Data's default target block size.
TASK_BYTES = 64 << 20
#: Forward batches per task at most.
TASK_BATCHES = 2
#: Rows per task when the batch size is chosen by the actor (--batch-size auto).
AUTO_TASK_ROWS = 256

TASK_FILE = re.compile(r"task-\d{6,}\.(features\.npy|rows\.npz)(\.tmp)?")
RUN_FOLDER = re.compile(r"run-[0-9a-f]{12}")


def task_rows(size: tuple[int, int], batch_size: int | None) -> int:
    """Rows per task at most (a work unit larger than that is a task of its own)."""
    by_bytes = TASK_BYTES // (size[0] * size[1] * 3)
    by_batches = AUTO_TASK_ROWS if batch_size is None else TASK_BATCHES * batch_size
    return max(1, min(by_bytes, by_batches))


def tasks_root(out: Path) -> Path:
    """The folder beside OUT holding the runs' task files."""
    return out.with_name(out.name + ".ray-tasks")


def new_run_folder(out: Path) -> Path:
    """An empty folder for this run's task files, after removing those earlier runs left."""
    remove_runs(out)
    folder = tasks_root(out) / f"run-{uuid.uuid4().hex[:12]}"
    folder.mkdir(parents=True)
    return folder


def remove_runs(out: Path) -> None:
    """Remove the task files of earlier runs on OUT (only files named as this module names
    them, in folders named as it names them), and the folders once empty."""
    root = tasks_root(out)
    if not root.is_dir():
        return
    for run in root.iterdir():
        if RUN_FOLDER.fullmatch(run.name) and run.is_dir():
            for f in run.iterdir():
                if TASK_FILE.fullmatch(f.name):
                    f.unlink()
            _rmdir_if_empty(run)
    _rmdir_if_empty(root)


def _rmdir_if_empty(folder: Path) -> None:
    if not any(folder.iterdir()):
        folder.rmdir()


def _names(folder: Path, task: int) -> tuple[Path, Path]:
    return task_features(folder, task), folder / f"task-{task:06d}.rows.npz"


def task_features(folder: Path, task: int) -> Path:
    """The features file of `task`: what an npy OUT adopts as a shard."""
    return folder / f"task-{task:06d}.features.npy"


def write_task(
    folder: Path, task: int, rows: RowBatch, between: Callable[[], None] = lambda: None
) -> None:
    """A task's rows (features included, failures not: those travel to the driver) into
    its two files, each whole or not at all (`between` runs between the two)."""
    features, small = _names(folder, task)
    arrays = {"keys": np.array(rows.keys, dtype=str)}
    for name in ("scales", "errors", "energy"):
        if getattr(rows, name) is not None:
            arrays[name] = getattr(rows, name)
    arrays.update({f"column.{name}": values for name, values in rows.columns.items()})
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_atomic(features, rows.features)
    between()
    write_atomic(small, buffer.getvalue())


def read_task(folder: Path, task: int) -> RowBatch:
    """A finished task's rows; its features mapped from disk, not read into memory."""
    features, small = _names(folder, task)
    with np.load(small) as f:
        arrays = {name: f[name] for name in f.files}
    return RowBatch(
        keys=[str(key) for key in arrays.pop("keys")],
        features=np.load(features, mmap_mode="r"),
        columns={k.split(".", 1)[1]: v for k, v in arrays.items() if k.startswith("column.")},
        scales=arrays.get("scales"),
        errors=arrays.get("errors"),
        energy=arrays.get("energy"),
    )


def remove_task(folder: Path, task: int) -> None:
    """A committed task's files."""
    for path in _names(folder, task):
        path.unlink(missing_ok=True)
