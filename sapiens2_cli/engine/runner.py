"""The runner: pending items -> batches -> backbone on the device -> writer thread.

`Extraction` is a checked plan (engine/job.py makes it once every flag, the weights and
OUT have been checked): the settled options, resolved against the weights and the device,
and the open output; `run` loads the model and makes the rows OUT does not hold yet.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from sapiens2_cli.config.choices import OutputFormat
from sapiens2_cli.config.options import ExtractOptions
from sapiens2_cli.config.values import Part
from sapiens2_cli.engine.background import BackgroundWriter
from sapiens2_cli.engine.forward import DeviceModel, Pending
from sapiens2_cli.engine.loader import Batch, decode_workers, iter_batches
from sapiens2_cli.engine.profile import StageClock
from sapiens2_cli.engine.progress import Progress, Summary
from sapiens2_cli.inputs.items import Item, Preprocess
from sapiens2_cli.model import load_backbone
from sapiens2_cli.output import FeatureWriter, RowBatch
from sapiens2_cli.output.npy.writer import Sink
from sapiens2_cli.reduce.apply_projection import DeviceProjection
from sapiens2_cli.reduce.projection import Projection
from sapiens2_cli.weights.resolve import Weights

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutputSpec:
    """What this process writes: OUT, or one part of it (--shard, torchrun)."""

    path: Path
    format: OutputFormat
    overwrite: bool = False
    part: Part | None = None  # one part of a split job: recorded in OUT
    sink: Sink | None = None  # npy: where each commit is uploaded (a URL OUT; path: staging)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C: the output was closed cleanly; carries the summary so far."""

    def __init__(self, summary: Summary) -> None:
        super().__init__("interrupted")
        self.summary = summary


@dataclass
class Extraction:
    """A checked plan: the weights, the resolved settings, the open output, what is left."""

    weights: Weights
    options: ExtractOptions  # settled, with size, layers and precisions resolved
    device: torch.device
    grid: tuple[int, int]
    projection: Projection | None  # --project, loaded
    writer: FeatureWriter
    format: OutputFormat
    pending: list[Item]
    skipped: int  # items OUT already holds (or failed before, with --skip-failed)
    failures: list[tuple[str, str]]  # inputs that gave no items at all (written first)
    ignored: int = 0  # members of inputs that are not images (counted, not failures)

    def run(self, bar: Progress) -> Summary:
        """Process the pending items, counting them on `bar` (a bar on stderr, one summed
        over torchrun's ranks, or a caller's function); on Ctrl-C close the output and
        raise Interrupted."""
        start = time.perf_counter()
        counts = {"done": 0, "failed": 0}
        clock = StageClock(self.device, self.options.profile)
        sink = BackgroundWriter(self.writer)
        compile_s, batch_size = None, self.options.batch_size
        try:
            if self.failures:
                sink.put(RowBatch([], None, {}, list(self.failures)))
                counts["failed"] += len(self.failures)
            if self.pending:
                compile_s, batch_size = self._process(sink, bar, counts, clock)
        except KeyboardInterrupt:
            bar.close()
            sink.close(complete=False)
            raise Interrupted(self.summary(counts, start, complete=False)) from None
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
        return self.summary(counts, start, True, compile_s, profile, batch_size)

    def _process(
        self, sink: BackgroundWriter, bar: Progress, counts: dict[str, int], clock: StageClock
    ) -> tuple[float | None, int]:
        """The loop; returns the compile warm-up's seconds (None without --compile) and the
        batch size used.

        Batch i+1 is submitted to the device before batch i's features are collected, so
        a GPU has work queued while the host waits for, checks and queues batch i.
        """
        opts, size = self.options, self.options.size
        # Decode workers start with the iterator: before the model loads when they can.
        batches = self._batches(opts.batch_size) if opts.batch_size else None
        projection = self.projection and DeviceProjection(self.projection, opts.layout, self.device)
        device = DeviceModel(
            self._load_model(), opts, self.device, self.grid, clock=clock, projection=projection
        )
        batch_size = opts.batch_size or device.fit_batch(size)
        if batches is None:
            batches = self._batches(batch_size)
        compile_s = device.warm_up(size) if opts.compile else None  # workers decode
        clock.restart()
        queued: tuple[Batch, Pending | None] | None = None
        while True:
            with clock.host("decode_wait"):
                batch = next(batches, None)
            if batch is None:
                break
            clock.add("decode", batch.decode_s)
            job = device.submit(batch.pixels) if batch.rows.keys else None
            if queued is not None:
                self._collect(*queued, sink, bar, counts, clock)
            queued = (batch, job)
        if queued is not None:
            self._collect(*queued, sink, bar, counts, clock)
        return compile_s, batch_size

    def _batches(self, batch_size: int) -> Iterator[Batch]:
        """Batches in input order; with decode workers, they start decoding now."""
        opts = self.options
        return iter_batches(
            self.pending,
            Preprocess(opts.size, opts.resize, opts.jpeg_draft),
            batch_size,
            decode_workers(opts.workers, self.device),
            pin_memory=self.device.type == "cuda",
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
        rows = replace(batch.rows, **(job.rows() if job is not None else {}))
        with clock.host("write_wait"):
            sink.put(rows)
        counts["done"] += len(rows.keys)
        counts["failed"] += len(rows.failures)
        bar.update(len(rows.keys), len(rows.failures))

    def _load_model(self) -> torch.nn.Module:
        dtype = self.options.weights_dtype.torch
        return load_backbone(
            self.weights.path, self.weights.arch_flag, device=self.device, dtype=dtype
        )

    def summary(
        self,
        counts: dict[str, int],
        start: float,
        complete: bool,
        compile_s: float | None = None,
        profile: dict | None = None,
        batch_size: int | None = None,
    ) -> Summary:
        """What the run did: `counts` (rows done, inputs failed) since `start`, and OUT as
        its writer now holds it (also the Ray engine's, scaleout/ray/split.py)."""
        return Summary(
            images=counts["done"],
            failed=counts["failed"],
            skipped=self.skipped,
            seconds=time.perf_counter() - start,
            output=str(self.writer.path),
            format=self.format.value,
            rows=self.writer.rows,
            failed_total=len(self.writer.failed),
            complete=complete,
            ignored=self.ignored,
            compile_s=compile_s,
            profile=profile,
            batch_size=batch_size,
        )
