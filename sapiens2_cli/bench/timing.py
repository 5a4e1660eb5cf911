"""Timing a backbone's forward pass: warmup, synchronised timed steps, peak memory.

Every step is bracketed by a device synchronisation, so a step's time is the work it
queued, not the time to queue it. Throughput is images over the summed step times;
median and p90 describe the spread of single steps.
"""

from __future__ import annotations

import datetime
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from sapiens2_cli.engine.device import autocast, cpu_bf16_feature, cpu_info
from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.version import __version__


@dataclass(frozen=True)
class Timing:
    """Measured forward-pass speed at one batch size."""

    batch_size: int
    warmup: int
    steps: int
    median_ms: float  # per batch
    p90_ms: float  # per batch
    images_per_s: float
    peak_memory_bytes: int
    peak_memory_source: str  # what peak_memory_bytes measures
    compile_s: float | None  # first call under torch.compile (compilation + one forward)

    def as_dict(self) -> dict:
        return asdict(self)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _pixels(batch_size: int, size: tuple[int, int], device: torch.device, dtype: torch.dtype):
    return torch.randn(batch_size, 3, *size, device=device, dtype=dtype)  # (B, 3, H, W)


def _timed(step: Callable[[], object], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    step()
    _sync(device)
    return time.perf_counter() - start


def time_forward(
    model: torch.nn.Module,
    batch_size: int,
    size: tuple[int, int],
    device: torch.device,
    dtype: torch.dtype,
    steps: int = 10,
    warmup: int = 2,
    compile: bool = False,
    autocast_to: torch.dtype | None = None,
) -> Timing:
    """Time `steps` forward passes of a random batch after `warmup` untimed ones.

    `dtype` is the weights' and the input's; `autocast_to` runs the forward under autocast
    instead, as `extract` does (float32 weights, bf16/fp16 compute).
    """
    if steps < 1 or warmup < 0:
        raise Sapiens2Error("--steps must be at least 1 and --warmup at least 0")
    pixels = _pixels(batch_size, size, device, dtype)
    compile_s = None
    if compile:
        model = torch.compile(model, dynamic=False)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with torch.inference_mode(), autocast(device, autocast_to or torch.float32):
        if compile:
            compile_s = _timed(lambda: model(pixels), device)
        for _ in range(warmup):
            model(pixels)
        times = [_timed(lambda: model(pixels), device) for _ in range(steps)]
    if device.type == "cuda":
        peak, source = torch.cuda.max_memory_allocated(device), "torch.cuda.max_memory_allocated"
    else:  # Linux reports KiB; the whole process since it started, weights included
        peak, source = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "process peak RSS"
    ms = sorted(1000 * t for t in times)
    return Timing(
        batch_size=batch_size,
        warmup=warmup,
        steps=steps,
        median_ms=statistics.median(ms),
        p90_ms=ms[min(len(ms) - 1, round(0.9 * (len(ms) - 1)))],
        images_per_s=batch_size * steps / sum(times),
        peak_memory_bytes=peak,
        peak_memory_source=source,
        compile_s=compile_s,
    )


def device_name(device: torch.device) -> str:
    """The GPU's marketing name, or the CPU model from /proc/cpuinfo where there is one."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_info("model name") or platform.processor() or platform.machine()


def environment(device: torch.device) -> dict:
    """What a figure depends on besides the model: versions, device, threads, date."""
    return {
        "sapiens2_cli": __version__,
        "torch": torch.__version__,
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "device": str(device),
        "device_name": device_name(device),
        "cpu_threads": torch.get_num_threads(),
        "cpu_bf16": cpu_bf16_feature(),  # the flag `--precision auto` on CPU went by
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
