"""End-to-end speed through the real extract pipeline, to set beside the bare model's.

The pipeline reads its weights from a file like `extract` does, so random weights of the
arch are saved to a temporary float32 checkpoint first (4 bytes per parameter). The run
goes through the library's `extract` unchanged: listing, decoding workers, batching, the
model, token selection, float16 conversion, HDF5 writing.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from sapiens2_cli.config.choices import Precision
from sapiens2_cli.config.options import ExtractOptions
from sapiens2_cli.engine.device import resolve_device
from sapiens2_cli.engine.loader import decode_workers
from sapiens2_cli.inputs.sources import list_images
from sapiens2_cli.model import Sapiens2Config, build_backbone, load_backbone
from sapiens2_cli.scaleout.launch import extract


@dataclass(frozen=True)
class PipelineTiming:
    """One extract run over a folder."""

    images: int  # rows written
    failed: int  # images that could not be decoded
    workers: int  # decode processes
    batch_size: int | None  # the one used (what auto chose); None if nothing was pending
    seconds: float  # the whole run, one model load (and compile warm-up) included
    load_s: float  # loading the same checkpoint alone, timed before the run
    compile_s: float | None  # --compile warm-up inside `seconds`
    images_per_s: float  # images / seconds: what `extract` shows
    steady_images_per_s: float  # with the load and the compile warm-up taken out
    profile: dict | None  # seconds per stage when profiled

    def as_dict(self) -> dict:
        return asdict(self)


@contextlib.contextmanager
def random_checkpoint(config: Sapiens2Config) -> Iterator[Path]:
    """A temporary float32 safetensors file of random weights for `config`."""
    with tempfile.TemporaryDirectory(prefix="sapiens2-bench-") as tmp:
        checkpoint = Path(tmp) / "random.safetensors"
        save_file(build_backbone(config).state_dict(), str(checkpoint))
        yield checkpoint


def time_extract(images: Sequence[str], options: ExtractOptions) -> PipelineTiming:
    """Extract features of `images` with `options` (a checkpoint, a size, how to run, the
    precisions resolved) into a temporary HDF5 (float16)."""
    device = resolve_device(options.device)
    start = time.perf_counter()
    weights_dtype = options.weights_dtype.torch
    load_backbone(options.checkpoint, device=device, dtype=weights_dtype)  # warms the cache
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    load_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory(prefix="sapiens2-bench-out-") as tmp:
        summary = extract(list(images), Path(tmp) / "features.h5", options)
    steady = summary.seconds - load_s - (summary.compile_s or 0.0)
    return PipelineTiming(
        images=summary.images,
        failed=summary.failed,
        workers=decode_workers(options.workers, device),
        batch_size=summary.batch_size,
        seconds=summary.seconds,
        load_s=load_s,
        compile_s=summary.compile_s,
        images_per_s=summary.images_per_s,
        steady_images_per_s=summary.images / steady if steady > 0 else 0.0,
        profile=summary.profile,
    )


def time_pipeline(
    folder: Path,
    config: Sapiens2Config,
    size: tuple[int, int],
    device: torch.device,
    precision: torch.dtype,
    batch_size: int,
    workers: int | None = None,
    profile: bool = False,
) -> PipelineTiming:
    """Extract features of every image in `folder` with random weights, into a temp HDF5;
    `profile` times each stage (PipelineTiming.profile)."""
    with random_checkpoint(config) as checkpoint:
        options = ExtractOptions(
            checkpoint=checkpoint,
            size=size,
            device=str(device),
            precision=Precision.of(precision),
            weights_dtype=Precision.FP32,
            batch_size=batch_size,
            workers=workers,
            profile=profile,
        )
        return time_extract(list_images([str(folder)]), options)
