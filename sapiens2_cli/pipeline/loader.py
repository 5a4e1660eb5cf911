"""Batches of decoded images, made in worker processes and handed over as uint8 tensors.

Decoding (the slow, CPU-bound part) runs in `workers` processes through torch's
DataLoader, which keeps the input order; only uint8 pixels cross to the main process (into
pinned memory when feeding a GPU). An image that fails becomes a (path, reason) record in
its batch, never a row.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from sapiens2_cli.pipeline.decode import Decoded, ImageError, ResizeMode, decode_image


@dataclass
class Batch:
    """Images of one batch that decoded, in input order, and the ones that did not."""

    paths: list[str]
    pixels: torch.Tensor  # (B, H, W, 3) uint8 RGB
    original_size: np.ndarray  # (B, 2) int32, (height, width) after EXIF
    content_box: np.ndarray | None  # (B, 4) int32; letterbox only
    failures: list[tuple[str, str]]  # (path, one-line reason)
    decode_s: float = 0.0  # seconds spent decoding this batch's images, in its worker

    def pin_memory(self) -> Batch:
        """Called by the DataLoader's pinning thread when feeding a GPU."""
        self.pixels = self.pixels.pin_memory()
        return self


class _Images(Dataset):
    def __init__(self, paths: Sequence[str], size: tuple[int, int], resize: ResizeMode) -> None:
        self.paths, self.size, self.resize = paths, size, resize

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[str, Decoded | str, float]:
        """(path, the decoded image or a one-line reason, seconds it took)."""
        path, start = self.paths[i], time.perf_counter()
        try:
            result: Decoded | str = decode_image(path, self.size, self.resize)
        except ImageError as e:
            result = str(e)
        except Exception as e:  # a decoder bug must cost one image, not the run
            result = f"unexpected {type(e).__name__} while decoding: {' '.join(str(e).split())}"
        return path, result, time.perf_counter() - start


class _Collate:
    """Splits decoded images from failures and stacks the pixels (picklable for workers)."""

    def __init__(self, size: tuple[int, int], letterbox: bool) -> None:
        self.size, self.letterbox = size, letterbox

    def __call__(self, items: list[tuple[str, Decoded | str, float]]) -> Batch:
        good = [(p, d) for p, d, _ in items if isinstance(d, Decoded)]
        pixels = np.stack([d.pixels for _, d in good]) if good else np.empty((0, *self.size, 3))
        return Batch(
            paths=[p for p, _ in good],
            pixels=torch.from_numpy(pixels.astype(np.uint8, copy=False)),  # (B, H, W, 3)
            original_size=np.array([d.original_size for _, d in good], np.int32).reshape(-1, 2),
            content_box=(
                np.array([d.content_box for _, d in good], np.int32).reshape(-1, 4)
                if self.letterbox
                else None
            ),
            failures=[(p, d) for p, d, _ in items if isinstance(d, str)],
            decode_s=sum(seconds for _, _, seconds in items),
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
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(32, (cores or 1) - 2))


#: Decoded pixels the workers may hold ahead of the loop, across all of them.
PREFETCH_BYTES = 4 << 30


def _prefetch_factor(workers: int, batch_bytes: int) -> int:
    """Batches each worker decodes ahead: 4, fewer when that would pass PREFETCH_BYTES.

    Each worker decodes whole batches, so many workers with large batches (16 workers x
    4 batches of 128 images at 1024x768 is 19 GB) would otherwise fill host memory.
    """
    return max(1, min(4, PREFETCH_BYTES // (workers * batch_bytes)))


def iter_batches(
    paths: Sequence[str],
    size: tuple[int, int],
    resize: ResizeMode,
    batch_size: int,
    workers: int,
    pin_memory: bool = False,
) -> Iterator[Batch]:
    """Batches of `batch_size` consecutive paths (the last may be short), in order."""
    batch_bytes = batch_size * size[0] * size[1] * 3
    loader = DataLoader(
        _Images(paths, size, resize),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=_Collate(size, resize == "letterbox"),
        pin_memory=pin_memory,
        worker_init_fn=_init_worker if workers else None,
        prefetch_factor=_prefetch_factor(workers, batch_bytes) if workers else None,
    )
    return iter(loader)
