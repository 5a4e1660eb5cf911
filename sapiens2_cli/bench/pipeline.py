"""End-to-end speed through the real extract pipeline, to set beside the bare model's.

The pipeline reads its weights from a file like `extract` does, so random weights of the
arch are saved to a temporary float32 checkpoint first (4 bytes per parameter). The run
goes through `pipeline.extract.prepare(...).run()` unchanged: listing, decoding workers,
batching, the model under autocast, token selection, float16 conversion, HDF5 writing.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from sapiens2_cli.model import Sapiens2Config, build_backbone, load_backbone
from sapiens2_cli.pipeline.extract import FeatureSpec, OutputSpec, RunOptions, prepare
from sapiens2_cli.pipeline.sources import list_images
from sapiens2_cli.pipeline.weights import resolve_weights


@dataclass(frozen=True)
class PipelineTiming:
    """One extract run over a folder."""

    images: int  # rows written
    failed: int  # images that could not be decoded
    workers: int  # decode processes
    seconds: float  # the whole run, one model load included
    load_s: float  # loading the same checkpoint alone, timed before the run
    images_per_s: float  # images / seconds: what `extract` shows
    steady_images_per_s: float  # images / (seconds - load_s): with the load taken out

    def as_dict(self) -> dict:
        return asdict(self)


def time_pipeline(
    folder: Path,
    config: Sapiens2Config,
    size: tuple[int, int],
    device: torch.device,
    precision: torch.dtype,
    batch_size: int,
    workers: int = 2,
) -> PipelineTiming:
    """Extract features of every image in `folder` with random weights, into a temp HDF5."""
    images = list_images([str(folder)])
    with tempfile.TemporaryDirectory(prefix="sapiens2-bench-") as tmp:
        checkpoint = Path(tmp) / "random.safetensors"
        save_file(build_backbone(config).state_dict(), str(checkpoint))
        start = time.perf_counter()
        load_backbone(checkpoint, device=device)  # also warms the page cache for the run
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        load_s = time.perf_counter() - start
        extraction = prepare(
            images,
            resolve_weights(None, checkpoint),
            FeatureSpec(size=size),
            OutputSpec(Path(tmp) / "features.h5", "h5"),
            RunOptions(device, precision, batch_size, workers),
        )
        summary = extraction.run(progress=False)
    steady = summary.seconds - load_s
    return PipelineTiming(
        images=summary.images,
        failed=summary.failed,
        workers=workers,
        seconds=summary.seconds,
        load_s=load_s,
        images_per_s=summary.images_per_s,
        steady_images_per_s=summary.images / steady if steady > 0 else 0.0,
    )
