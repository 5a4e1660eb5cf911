"""Batches of decoded items, made in worker processes and handed over as uint8 tensors.

Pending items are grouped into work units: consecutive items of one file, as many as its
reader takes at once (a photo's boxes all together, a video's frames in runs from one
seek). Units are packed in order into batches of at most `batch_size` rows, and decoding
runs in `workers` processes through torch's DataLoader, which keeps that order; only
uint8 pixels and the small per-row columns cross to the main process (into pinned
memory when feeding a GPU). An item that fails becomes a (key, reason) record in its
batch, never a row.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from sapiens2_cli.inputs.items import Failure, Item, Preprocess, Row
from sapiens2_cli.output import RowBatch
from sapiens2_cli.output.rows import concat_columns
from sapiens2_cli.system import usable_cores
from sapiens2_cli.text import one_line


@dataclass
class Batch:
    """Pixels of the rows that decoded and, in `rows`, everything the writer will need."""

    pixels: torch.Tensor  # (B, H, W, 3) uint8 RGB, in the order of rows.keys
    rows: RowBatch  # keys, per-row columns and failures; features filled in later
    decode_s: float = 0.0  # seconds spent decoding this batch's items, in its worker

    def pin_memory(self) -> Batch:
        """Called by the DataLoader's pinning thread when feeding a GPU."""
        self.pixels = self.pixels.pin_memory()
        return self


def work_units(items: Sequence[Item], batch_size: int) -> list[list[Item]]:
    """Consecutive items of one file and reader, at most its reader's chunk (or
    `batch_size`) each: what one decode call handles."""
    units: list[list[Item]] = []
    for item in items:
        chunk = item.reader.chunk_rows
        limit = sys.maxsize if chunk is None else min(chunk, batch_size)
        last = units[-1] if units else None
        if (
            last
            and last[0].file == item.file
            and last[0].reader == item.reader
            and len(last) < limit
        ):
            last.append(item)
        else:
            units.append([item])
    return units


def pack(units: Sequence[Sequence[Item]], batch_size: int) -> list[list[int]]:
    """Consecutive units grouped into batches of at most `batch_size` rows (a unit larger
    than that is a batch of its own; the device stage splits it)."""
    batches: list[list[int]] = []
    rows = 0
    for i, unit in enumerate(units):
        if not batches or rows + len(unit) > batch_size:
            batches.append([])
            rows = 0
        batches[-1].append(i)
        rows += len(unit)
    return batches


class _Units(Dataset):
    def __init__(self, units: Sequence[Sequence[Item]], prep: Preprocess) -> None:
        self.units, self.prep = units, prep

    def __len__(self) -> int:
        return len(self.units)

    def __getitem__(self, i: int) -> tuple[list[Row | Failure], float]:
        return decode_unit(self.units[i], self.prep)


def decode_unit(unit: Sequence[Item], prep: Preprocess) -> tuple[list[Row | Failure], float]:
    """A unit's rows and failures, and the seconds decoding took."""
    start = time.perf_counter()
    try:
        results = list(unit[0].reader.read(unit, prep))
    except Exception as e:  # a decoder bug must cost one unit, not the run
        reason = f"unexpected {type(e).__name__} while decoding: {one_line(e)}"
        results = [Failure(item.key, reason) for item in unit]
    return results, time.perf_counter() - start


class Collate:
    """Splits rows from failures and stacks pixels and columns (picklable for workers)."""

    def __init__(self, size: tuple[int, int]) -> None:
        self.size = size

    def __call__(self, units: list[tuple[list[Row | Failure], float]]) -> Batch:
        results = [r for unit, _ in units for r in unit]
        rows = [r for r in results if isinstance(r, Row)]
        pixels = np.stack([r.pixels for r in rows]) if rows else np.empty((0, *self.size, 3))
        columns = concat_columns(
            [(1, {k: np.asarray(v)[None] for k, v in r.columns.items()}) for r in rows]
        )
        return Batch(
            pixels=torch.from_numpy(pixels.astype(np.uint8, copy=False)),
            rows=RowBatch(
                keys=[r.key for r in rows],
                features=None,
                columns=columns,
                failures=[(r.key, r.reason) for r in results if isinstance(r, Failure)],
            ),
            decode_s=sum(seconds for _, seconds in units),
        )


def _init_worker(_: int) -> None:
    """Leave Ctrl-C to the main process, which stops the workers and keeps what was written.

    A handover of pixels cut short by that stop resets the connection of the worker's
    fd-sharing thread (multiprocessing.resource_sharer, which reports through
    sys.excepthook); that is the stop working, not an error, so it gets no traceback.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    report = sys.excepthook

    def quiet_when_cut_off(kind, error, tb) -> None:
        if not issubclass(kind, (ConnectionError, EOFError)):
            report(kind, error, tb)

    sys.excepthook = quiet_when_cut_off


def default_workers(device: torch.device) -> int:
    """Decode processes when --workers is not given.

    CPU: one. It overlaps decoding with the forward (in the main process decoding adds its
    own time, about 1 % of a small model's forward: docs/performance.md), and more would
    only take cycles from the forward's threads, since decoding needs a small share of a
    core there. GPU: every core but two (the loop and the writer thread), at most 32:
    decoding is then what keeps the GPU fed, ~10 ms per 1024x768 JPEG and ~130 ms per
    12 MP one on one core.
    """
    if device.type == "cpu":
        return 1
    return max(1, min(32, usable_cores() - 2))


def decode_workers(workers: int | None, device: torch.device) -> int:
    """`--workers`, or the default for the device when it is None."""
    return default_workers(device) if workers is None else workers


#: Decoded pixels the workers may hold ahead of the loop, across all of them.
PREFETCH_BYTES = 4 << 30


def _prefetch_factor(workers: int, batch_bytes: int) -> int:
    """Batches each worker decodes ahead: 4, fewer when that would pass PREFETCH_BYTES.

    Each worker decodes whole batches, so many workers with large batches (16 workers x
    4 batches of 128 images at 1024x768 is 19 GB) would otherwise fill host memory.
    """
    return max(1, min(4, PREFETCH_BYTES // (workers * batch_bytes)))


def iter_batches(
    items: Sequence[Item],
    prep: Preprocess,
    batch_size: int,
    workers: int,
    pin_memory: bool = False,
) -> Iterator[Batch]:
    """Batches of at most `batch_size` rows (a unit larger than that alone), in order."""
    units = work_units(items, batch_size)
    batch_bytes = batch_size * prep.size[0] * prep.size[1] * 3
    loader = DataLoader(
        _Units(units, prep),
        batch_sampler=pack(units, batch_size),
        num_workers=workers,
        collate_fn=Collate(prep.size),
        pin_memory=pin_memory,
        worker_init_fn=_init_worker if workers else None,
        prefetch_factor=_prefetch_factor(workers, batch_bytes) if workers else None,
    )
    return iter(loader)
