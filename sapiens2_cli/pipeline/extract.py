"""The extract loop: pending images -> batches -> backbone on the device -> writer thread.

`prepare` does every check that can fail on the user's flags or files (weights, size,
layers, OUT and its settings) before anything heavy starts; `Extraction.run` then loads the
model and processes the images the output does not hold yet.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from sapiens2_cli import __version__
from sapiens2_cli.device import autocast, precision_name
from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.model import PIXEL_MEAN, PIXEL_STD, load_backbone, normalize_pixels
from sapiens2_cli.pipeline.background import BackgroundWriter
from sapiens2_cli.pipeline.decode import ResizeMode
from sapiens2_cli.pipeline.loader import iter_batches
from sapiens2_cli.pipeline.progress import Progress, Summary
from sapiens2_cli.pipeline.weights import Weights, checkpoint_sha256
from sapiens2_cli.writers import FeatureWriter, OutputFormat, RowBatch, open_writer
from sapiens2_cli.writers.base import FORMAT_VERSION

log = logging.getLogger(__name__)

TokenMode = Literal["patch", "all", "cls", "mean"]
Layout = Literal["tokens", "map"]
StorageDtype = Literal["float16", "float32"]
FLOAT16_MAX = float(np.finfo(np.float16).max)


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


@dataclass(frozen=True)
class RunOptions:
    device: torch.device
    precision: torch.dtype  # compute dtype under autocast; weights stay float32
    batch_size: int = 8
    workers: int = 2  # decode processes; 0 decodes in the main process


def select_tokens(
    outputs: list[torch.Tensor], tokens: TokenMode, layout: Layout, grid: tuple[int, int]
) -> torch.Tensor:
    """Block outputs, each (B, 9 + h*w, D), -> the kept features (B, n_layers, ...)."""
    x = torch.stack([o.float() for o in outputs], dim=1)  # (B, L, 9 + h*w, D)
    patches = x[:, :, x.shape[2] - grid[0] * grid[1] :]  # (B, L, h*w, D)
    if tokens == "all":
        return x
    if tokens == "cls":
        return x[:, :, 0]  # (B, L, D)
    if tokens == "mean":
        return patches.mean(dim=2)  # (B, L, D)
    if layout == "map":
        return patches.unflatten(2, grid).permute(0, 1, 4, 2, 3)  # (B, L, D, h, w)
    return patches


def to_storage(features: torch.Tensor, dtype: StorageDtype) -> torch.Tensor:
    """float32 features -> the storage dtype, refusing values it cannot hold."""
    if not torch.isfinite(features).all():
        raise Sapiens2Error(
            "the model produced inf or NaN features: use --precision bf16 or --precision fp32"
        )
    if dtype == "float32":
        return features
    peak = features.abs().max().item() if features.numel() else 0.0
    if peak > FLOAT16_MAX:
        raise Sapiens2Error(
            f"features reach {peak:.4g}, beyond float16's range (65504): rerun with "
            "--dtype float32 (and --overwrite)"
        )
    return features.to(torch.float16)


class _Model:
    """Runs the backbone on uint8 batches, halving the batch if CUDA runs out of memory."""

    def __init__(self, model: torch.nn.Module, spec: FeatureSpec, run: RunOptions) -> None:
        self.model, self.spec, self.run = model, spec, run
        self.layers = list(spec.layers)
        self.chunk: int | None = None  # largest batch that fits, once one did not

    def __call__(self, pixels: torch.Tensor, grid: tuple[int, int]) -> np.ndarray:
        """(B, H, W, 3) uint8 -> (B, n_layers, ...) features in the storage dtype, on the host."""
        parts, start = [], 0
        while start < len(pixels):
            chunk = self.chunk or len(pixels)
            try:
                parts.append(self._forward(pixels[start : start + chunk], grid))
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
        return np.concatenate(parts)

    def _forward(self, pixels: torch.Tensor, grid: tuple[int, int]) -> np.ndarray:
        device = self.run.device
        with torch.inference_mode(), autocast(device, self.run.precision):
            x = pixels.to(device, non_blocking=True).permute(0, 3, 1, 2)  # (B, 3, H, W) uint8
            outputs = self.model.forward_layers(normalize_pixels(x), self.layers)
            features = select_tokens(outputs, self.spec.tokens, self.spec.layout, grid)
        return to_storage(features, self.spec.dtype).cpu().numpy()


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

    def run(self, progress: bool = True) -> Summary:
        """Process the pending images; on Ctrl-C close the output and raise Interrupted."""
        start = time.perf_counter()
        counts = {"done": 0, "failed": 0}
        sink = BackgroundWriter(self.writer)
        bar = Progress(len(self.pending), progress)
        try:
            if self.pending:
                self._process(sink, bar, counts)
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
        sink.close(complete=True)
        return self._summary(counts, start, complete=True)

    def _process(self, sink: BackgroundWriter, bar: Progress, counts: dict[str, int]) -> None:
        run = self.run_options
        model = _Model(self._load_model(), self.spec, run)
        batches = iter_batches(
            self.pending,
            self.spec.size,
            self.spec.resize,
            run.batch_size,
            run.workers,
            pin_memory=run.device.type == "cuda",
        )
        for batch in batches:
            features = model(batch.pixels, self.grid) if batch.paths else None
            sink.put(
                RowBatch(
                    batch.paths, features, batch.original_size, batch.content_box, batch.failures
                )
            )
            counts["done"] += len(batch.paths)
            counts["failed"] += len(batch.failures)
            bar.update(len(batch.paths), len(batch.failures))

    def _load_model(self) -> torch.nn.Module:
        run = self.run_options
        return load_backbone(
            self.weights.path, self.weights.arch_flag, device=run.device, dtype=torch.float32
        )

    def _summary(self, counts: dict[str, int], start: float, complete: bool) -> Summary:
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
    tokens = torch.empty(1, config.num_prefix_tokens + grid[0] * grid[1], config.embed_dim)
    row = select_tokens([tokens.to("meta")] * len(spec.layers), spec.tokens, spec.layout, grid)
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
        "tool_version": __version__,
        "format_version": FORMAT_VERSION,
        "complete": False,
    }
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
