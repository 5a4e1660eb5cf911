"""The extract loop: pending images -> batches -> backbone on the device -> writer thread.

`prepare` does every check that can fail on the user's flags or files (weights, size,
layers, OUT and its settings) before anything heavy starts; `Extraction.run` then loads the
model and processes the images the output does not hold yet.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from sapiens2_cli import __version__
from sapiens2_cli.bench.timing import find_batch_size
from sapiens2_cli.device import precision_name
from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.model import PIXEL_MEAN, PIXEL_STD, load_backbone
from sapiens2_cli.pipeline.background import BackgroundWriter
from sapiens2_cli.pipeline.decode import ResizeMode
from sapiens2_cli.pipeline.forward import (
    CompileMode,
    DeviceModel,
    Layout,
    Pending,
    StorageDtype,
    TokenMode,
    select_tokens,
)
from sapiens2_cli.pipeline.loader import Batch, default_workers, iter_batches
from sapiens2_cli.pipeline.profile import StageClock
from sapiens2_cli.pipeline.progress import Progress, Summary
from sapiens2_cli.pipeline.weights import Weights, checkpoint_sha256
from sapiens2_cli.writers import FeatureWriter, OutputFormat, RowBatch, open_writer
from sapiens2_cli.writers.base import FORMAT_VERSION
from sapiens2_cli.writers.merge import Part

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeatureSpec:
    """What to compute and keep: the settings that define the numbers in the output."""

    size: tuple[int, int] | None  # (H, W); None: the checkpoint's training size
    resize: ResizeMode = "stretch"
    layers: tuple[int, ...] = (-1,)  # block indices; negatives count from the end
    tokens: TokenMode = "patch"
    layout: Layout = "tokens"
    dtype: StorageDtype = "float16"


@dataclass(frozen=True)
class OutputSpec:
    path: Path
    format: OutputFormat
    overwrite: bool = False
    compression: str | None = None  # HDF5 only: gzip or lzf
    shard_rows: int | None = None  # npy only; None: about 256 MiB per shard
    retry_failed: bool = True  # on resume, try images that failed before again
    part: Part | None = None  # one part of a split job (--shard, torchrun): recorded in OUT


@dataclass(frozen=True)
class RunOptions:
    device: torch.device
    precision: torch.dtype  # compute dtype (autocast when it differs from the weights')
    batch_size: int | None = 8  # None: the largest that fits in GPU memory (1 on CPU)
    workers: int | None = None  # decode processes; 0: the main process; None: by device
    weights_dtype: torch.dtype = torch.float32  # float32, or the compute dtype
    compile: CompileMode | None = None  # torch.compile mode for the device work
    profile: bool = False  # time each stage (docs/performance.md)

    @property
    def decode_workers(self) -> int:
        """`workers`, or the default for the device when it is None."""
        return default_workers(self.device) if self.workers is None else self.workers


class Interrupted(Exception):
    """Ctrl-C: the output was closed cleanly; carries the summary so far."""

    def __init__(self, summary: Summary) -> None:
        super().__init__("interrupted")
        self.summary = summary


@dataclass
class Extraction:
    """A checked plan: the weights, the resolved settings, the open output, what is left."""

    weights: Weights
    spec: FeatureSpec  # size and layers resolved
    output: OutputSpec
    run_options: RunOptions
    settings: dict
    grid: tuple[int, int]
    writer: FeatureWriter
    pending: list[str]
    skipped: int

    def run(self, progress: bool = True, bar: Progress | None = None) -> Summary:
        """Process the pending images; on Ctrl-C close the output and raise Interrupted.

        `bar` replaces the progress bar (torchrun: one that sums every rank's counts)."""
        start = time.perf_counter()
        counts = {"done": 0, "failed": 0}
        clock = StageClock(self.run_options.device, self.run_options.profile)
        sink = BackgroundWriter(self.writer)
        bar = bar or Progress(len(self.pending), progress)
        compile_s, batch_size = None, self.run_options.batch_size
        try:
            if self.pending:
                compile_s, batch_size = self._process(sink, bar, counts, clock)
        except KeyboardInterrupt:
            bar.close()
            sink.close(complete=False)
            raise Interrupted(self._summary(counts, start, complete=False)) from None
        except BaseException:
            bar.close()
            try:  # keep what was committed; the error that stopped the run is the one to show
                sink.close(complete=False)
            except Exception as e:
                log.debug("closing the output after an error: %s", e)
            raise
        bar.close()
        with clock.host("write_wait"):
            sink.close(complete=True)
        clock.add("write", sink.busy_s)
        profile = clock.report(counts["done"], batch_size) if clock.enabled else None
        return self._summary(counts, start, True, compile_s, profile, batch_size)

    def _process(
        self, sink: BackgroundWriter, bar: Progress, counts: dict[str, int], clock: StageClock
    ) -> tuple[float | None, int]:
        """The loop; returns the compile warm-up's seconds (None without --compile) and the
        batch size used.

        Batch i+1 is submitted to the device before batch i's features are collected, so
        a GPU has work queued while the host waits for, checks and queues batch i.
        """
        run, spec = self.run_options, self.spec
        # Decode workers start with the iterator: before the model loads when they can.
        batches = self._batches(run.batch_size) if run.batch_size else None
        model = self._load_model()
        batch_size = run.batch_size or find_batch_size(
            model, spec.size, run.device, run.weights_dtype, autocast_to=run.precision
        )
        if batches is None:
            batches = self._batches(batch_size)
        device = DeviceModel(
            model,
            layers=spec.layers,
            tokens=spec.tokens,
            layout=spec.layout,
            dtype=spec.dtype,
            grid=self.grid,
            device=run.device,
            precision=run.precision,
            batch_size=batch_size,
            compile=run.compile,
            clock=clock,
        )
        compile_s = device.warm_up(spec.size) if run.compile else None  # workers decode meanwhile
        clock.restart()
        queued: tuple[Batch, Pending | None] | None = None
        while True:
            with clock.host("decode_wait"):
                batch = next(batches, None)
            if batch is None:
                break
            clock.add("decode", batch.decode_s)
            job = device.submit(batch.pixels) if batch.paths else None
            if queued is not None:
                self._collect(*queued, sink, bar, counts, clock)
            queued = (batch, job)
        if queued is not None:
            self._collect(*queued, sink, bar, counts, clock)
        return compile_s, batch_size

    def _batches(self, batch_size: int) -> Iterator[Batch]:
        """Batches in input order; with decode workers, they start decoding now."""
        run = self.run_options
        return iter_batches(
            self.pending,
            self.spec.size,
            self.spec.resize,
            batch_size,
            run.decode_workers,
            pin_memory=run.device.type == "cuda",
        )

    def _collect(
        self,
        batch: Batch,
        job: Pending | None,
        sink: BackgroundWriter,
        bar: Progress,
        counts: dict[str, int],
        clock: StageClock,
    ) -> None:
        """Hand a submitted batch's features (range-checked) and failures to the writer."""
        features = job.result() if job is not None else None
        columns = {"original_size": batch.original_size, "content_box": batch.content_box}
        columns = {name: values for name, values in columns.items() if values is not None}
        row = RowBatch(batch.paths, features, columns, batch.failures)
        with clock.host("write_wait"):
            sink.put(row)
        counts["done"] += len(batch.paths)
        counts["failed"] += len(batch.failures)
        bar.update(len(batch.paths), len(batch.failures))

    def _load_model(self) -> torch.nn.Module:
        run = self.run_options
        return load_backbone(
            self.weights.path, self.weights.arch_flag, device=run.device, dtype=run.weights_dtype
        )

    def _summary(
        self,
        counts: dict[str, int],
        start: float,
        complete: bool,
        compile_s: float | None = None,
        profile: dict | None = None,
        batch_size: int | None = None,
    ) -> Summary:
        return Summary(
            images=counts["done"],
            failed=counts["failed"],
            skipped=self.skipped,
            seconds=time.perf_counter() - start,
            output=str(self.output.path),
            format=self.output.format,
            rows=self.writer.rows,
            failed_total=len(self.writer.failed),
            complete=complete,
            compile_s=compile_s,
            profile=profile,
            batch_size=batch_size,
        )


def resolve_layers(layers: tuple[int, ...], num_layers: int) -> tuple[int, ...]:
    """Block indices as non-negative numbers, checked against the model's depth."""
    if not layers:
        raise Sapiens2Error("--layers is empty: give block indices such as -1 or 8,17")
    for i in layers:
        if not -num_layers <= i < num_layers:
            raise Sapiens2Error(
                f"--layers {i} is out of range: this model has blocks 0..{num_layers - 1} "
                f"(or -1..-{num_layers} from the end)"
            )
    resolved = tuple(i % num_layers for i in layers)
    if len(set(resolved)) != len(resolved):
        raise Sapiens2Error(f"--layers names a block twice ({list(layers)}): list each once")
    return resolved


def prepare(
    images: list[str], weights: Weights, spec: FeatureSpec, output: OutputSpec, run: RunOptions
) -> Extraction:
    """Check everything against the weights and OUT, and open OUT (new or resumed)."""
    config = weights.info.config
    size = spec.size or config.image_size
    config.check_image_size(*size)
    if spec.layout == "map" and spec.tokens != "patch":
        raise Sapiens2Error(
            f"--layout map needs --tokens patch (the {spec.tokens} tokens are not a grid)"
        )
    spec = replace(spec, size=tuple(size), layers=resolve_layers(spec.layers, config.num_layers))
    grid = config.grid_size(*size)
    # The shape one row will have, found by running the token selection on the meta device.
    tokens = torch.empty(
        1, config.num_prefix_tokens + grid[0] * grid[1], config.embed_dim, device="meta"
    )
    row = select_tokens([tokens] * len(spec.layers), spec.tokens, spec.layout, grid)
    settings = {
        "arch": weights.arch,
        "checkpoint": weights.path.name,
        "checkpoint_sha256": checkpoint_sha256(weights.path),
        "image_size": list(size),
        "grid_size": list(grid),
        "embed_dim": config.embed_dim,
        "mean": list(PIXEL_MEAN),
        "std": list(PIXEL_STD),
        "resize": spec.resize,
        "layers": list(spec.layers),
        "tokens": spec.tokens,
        "layout": spec.layout,
        "dtype": spec.dtype,
        "precision": precision_name(run.precision),
        "weights_dtype": precision_name(run.weights_dtype),
        "tool_version": __version__,
        "format_version": FORMAT_VERSION,
        "complete": False,
    }
    if output.part is not None:
        settings["part"] = [output.part.index, output.part.count]
    writer, done = open_writer(
        output.path,
        output.format,
        settings,
        tuple(row.shape[1:]),
        np.dtype(spec.dtype),
        overwrite=output.overwrite,
        compression=output.compression,
        shard_rows=output.shard_rows,
    )
    pending = [
        p for p in images if p not in done and (output.retry_failed or p not in writer.failed)
    ]
    return Extraction(
        weights, spec, output, run, settings, grid, writer, pending, len(images) - len(pending)
    )
