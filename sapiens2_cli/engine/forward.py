"""The device stage of extract: uint8 batches in, features in the storage dtype out.

A batch is submitted, then collected later. On a GPU, `submit` only queues work: the
upload on its own stream (pinned uint8, non-blocking), normalization, the backbone (which
keeps the asked tokens in the asked layout), pooling, the projection and the storage-dtype
conversion on the compute stream, and the copy back on a third stream into pinned host
memory; the loop submits the next batch before it collects
this one, so the GPU always has a batch queued while the host waits, writes and decodes.
On the CPU everything runs inside `submit`.

The float16 range check costs no synchronisation of its own: the device computes the
largest magnitude kept alongside the features, it comes back with them, and `result`
checks it before the features are handed to the writer.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass

import numpy as np
import torch

from sapiens2_cli.config.choices import CompileMode, Layout, StorageDtype
from sapiens2_cli.config.options import ExtractOptions
from sapiens2_cli.engine.device import autocast
from sapiens2_cli.engine.profile import StageClock
from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.model import normalize_pixels
from sapiens2_cli.reduce.apply_projection import DeviceProjection, project
from sapiens2_cli.reduce.cast import StoredBatch, check_range, to_storage
from sapiens2_cli.reduce.pool import pool_patches

log = logging.getLogger(__name__)

#: The first batch size `--batch-size auto` tries on a GPU.
AUTO_BATCH_START = 256


@dataclass
class _Chunk:
    """One chunk's features on their way to the host."""

    stored: StoredBatch  # pinned host memory on a GPU
    done: torch.cuda.Event | None  # the copy back has finished (GPU only)


class Pending:
    """Features of one batch, submitted to the device and not yet collected."""

    def __init__(self, chunks: list[_Chunk], dtype: StorageDtype, clock: StageClock) -> None:
        self._chunks, self._dtype, self._clock = chunks, dtype, clock

    def result(self) -> np.ndarray:
        """Wait for the copy back, check the range, return (B, n_layers, ...) on the host."""
        return self.rows()["features"]

    def rows(self) -> dict[str, np.ndarray]:
        """`result`, with int8's `scales` and `errors` and the projection's `energy` beside
        `features` (RowBatch fields)."""
        with self._clock.host("device_wait"):
            for chunk in self._chunks:
                if chunk.done is not None:
                    chunk.done.synchronize()
        for chunk in self._chunks:
            check_range(chunk.stored.peak.item(), self._dtype)
        rows = [chunk.stored.row_aligned() for chunk in self._chunks]
        return {name: _joined([p[name].numpy() for p in rows]) for name in rows[0]}


class DeviceModel:
    """Runs the backbone on uint8 batches, halving the batch if CUDA runs out of memory.

    With `compile`, the device work (normalize to storage conversion) is one
    `torch.compile(dynamic=False)` graph at a fixed batch shape: a short last batch is
    padded with copies of its last image and the extra rows dropped, so it never
    recompiles. `reduce-overhead` adds CUDA graphs for that shape.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        options: ExtractOptions,
        device: torch.device,
        grid: tuple[int, int],
        *,
        clock: StageClock | None = None,
        projection: DeviceProjection | None = None,
    ) -> None:
        """What to keep and how to run come from `options` (settings left out take their
        defaults; the precision must be resolved for the device, not auto)."""
        opts = options.with_defaults()
        self.projection = projection
        self.model, self.layers, self.tokens = model, list(opts.layers), opts.tokens
        self.layout, self.pool, self.dtype = opts.layout, opts.pool, opts.dtype
        self.grid, self.device, self.precision = grid, device, opts.precision.torch
        # the compiled shape; shrinks if CUDA runs out of memory
        self.batch_size = opts.batch_size or 1
        compile = (opts.compile_mode or CompileMode.DEFAULT) if opts.compile else None
        self.clock = clock or StageClock(device)
        self.chunk: int | None = None  # largest batch that fits, once one did not
        cuda = device.type == "cuda"
        self.compute_stream = torch.cuda.current_stream(device) if cuda else None
        self.upload_stream = torch.cuda.Stream(device) if cuda else None
        self.download_stream = torch.cuda.Stream(device) if cuda else None
        self.compiled = compile is not None
        self.cuda_graphs = compile in ("reduce-overhead", "max-autotune") and cuda
        self._features = self._device_features
        if compile is not None:
            # Inductor would otherwise keep bf16 intermediates (RoPE) in float32 registers,
            # moving features by ~4e-2; emulating the casts keeps eager's rounding.
            options = torch._inductor.list_mode_options(compile) | {"emulate_precision_casts": True}
            self._features = torch.compile(self._device_features, dynamic=False, options=options)

    def warm_up(self, size: tuple[int, int]) -> float:
        """Compile for the batch shape on a blank batch; returns seconds (sync included)."""
        start = time.perf_counter()
        blank = torch.zeros(self.batch_size, *size, 3, dtype=torch.uint8)
        self.submit(blank).result()
        return time.perf_counter() - start

    def fit_batch(self, size: tuple[int, int], start: int = AUTO_BATCH_START) -> int:
        """`--batch-size auto`: the largest of start, start/2, ..., 1 that runs, found by
        running exactly what `submit` runs (kept layers stacked, storage conversion
        included) on a blank batch, through its own out-of-memory back-off.

        A CPU out of memory usually ends the process (the kernel's OOM killer) rather than
        raising, so there is nothing to probe: on CPU this is 1.
        """
        if self.device.type != "cuda":
            log.info("--batch-size auto probes GPU memory only; using 1 on %s", self.device.type)
            self.batch_size = 1
            return 1
        self.batch_size, self.chunk = start, None
        self.submit(torch.zeros(start, *size, 3, dtype=torch.uint8)).result()
        self.batch_size, self.chunk = self.chunk or start, None
        return self.batch_size

    def submit(self, pixels: torch.Tensor) -> Pending:
        """Queue a (B, H, W, 3) uint8 batch; `.result()` gives its features on the host."""
        chunks, start = [], 0
        while start < len(pixels):
            chunk = self.chunk or self.batch_size
            try:
                chunks.append(self._submit(pixels[start : start + chunk], chunk))
            except torch.OutOfMemoryError:
                if chunk == 1:
                    raise Sapiens2Error(
                        "CUDA ran out of memory on a single image: use a smaller --size, "
                        "a smaller --arch or --precision bf16"
                    ) from None
                if self.chunk is None:
                    log.warning(
                        "CUDA ran out of memory at batch size %d: going on with %d "
                        "(and smaller if needed)",
                        chunk,
                        chunk // 2,
                    )
                self.chunk = chunk // 2
                torch.cuda.empty_cache()
                continue
            start += chunk
        return Pending(chunks, self.dtype, self.clock)

    def _submit(self, pixels: torch.Tensor, shape: int) -> _Chunk:
        clock, n = self.clock, len(pixels)
        with _on(self.upload_stream):
            begin = clock.mark(self.upload_stream)
            x = pixels.to(self.device, non_blocking=True)  # (n, H, W, 3) uint8
            clock.span("upload", begin, clock.mark(self.upload_stream))
        if self.compute_stream is not None:
            self.compute_stream.wait_stream(self.upload_stream)
            x.record_stream(self.compute_stream)
        begin = clock.mark(self.compute_stream)
        if self.compiled and n < shape:  # one graph shape: pad with the last image
            x = torch.cat((x, x[-1:].expand(shape - n, *x.shape[1:])))
        if self.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        with torch.inference_mode():
            stored = self._features(x)
            if self.cuda_graphs:  # the next replay reuses the graph's output memory
                stored = StoredBatch(*(t if t is None else t.clone() for t in stored))
        stored = stored._replace(**{k: v[:n] for k, v in stored.row_aligned().items()})
        clock.span("forward", begin, clock.mark(self.compute_stream))
        if self.download_stream is None:
            return _Chunk(stored, None)
        self.download_stream.wait_stream(self.compute_stream)
        with torch.cuda.stream(self.download_stream):
            begin = clock.mark(self.download_stream)
            host = StoredBatch(*(t if t is None else _to_pinned(t) for t in stored))
            done = torch.cuda.Event()
            done.record(self.download_stream)
            clock.span("download", begin, clock.mark(self.download_stream))
        for t in stored:
            if t is not None:
                t.record_stream(self.download_stream)
        return _Chunk(host, done)

    def _device_features(self, pixels: torch.Tensor) -> StoredBatch:
        """(B, H, W, 3) uint8 on the device -> the features in their storage form."""
        with autocast(self.device, self.precision):
            # Contiguous NCHW, as upstream's transforms give it: a channels-last input takes
            # another convolution kernel, and its last-bit differences in the patch embedding
            # grow through the bf16 RoPE to ~2e-3 by the last block.
            x = normalize_pixels(pixels.permute(0, 3, 1, 2)).contiguous()  # (B, 3, H, W)
            kept = self.model.forward_kept(x, self.layers, self.tokens, self.layout)
            kept = pool_patches(kept, self.tokens, self.layout, self.grid, self.pool)
        kept, energy = project(kept, self.projection)
        return to_storage(kept, self.dtype, dim=Layout(self.layout).feature_axis)._replace(
            energy=energy
        )


def _to_pinned(t: torch.Tensor) -> torch.Tensor:
    """A copy of device tensor `t` into pinned host memory, queued on the current stream."""
    host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
    return host.copy_(t, non_blocking=True)


def _joined(arrays: list[np.ndarray]) -> np.ndarray:
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)  # one array: no copy


def _on(stream: torch.cuda.Stream | None) -> contextlib.AbstractContextManager:
    return torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()
