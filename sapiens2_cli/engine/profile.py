"""Where an extract run's time goes: seconds per stage and the share the device sat idle.

Stages, in the order a batch meets them (docs/performance.md, "Profiling extract"):

- decode: seconds the decode workers spent reading and resizing (summed over workers, so
  it can exceed the wall time), and decode_wait: the loop waiting for the next batch;
- upload: the host -> device copy of the uint8 batch;
- forward: normalization, the backbone, token selection, the storage-dtype conversion;
- download: the device -> host copy of the features, and device_wait: the loop waiting
  for a batch's features to be back (on a GPU: the device is the bottleneck then);
- write: the writer thread's seconds, and write_wait: the loop blocked on the writer.

On the CPU the device stages are timed with `perf_counter` (they are synchronous). On a GPU
they are CUDA events recorded on the streams that run them and read once at the end, so
profiling adds no synchronisation. When profiling is off nothing is recorded on the device.
The device idle share is 1 - (forward seconds / wall seconds of the loop): on a GPU the
time the compute stream had no forward to run; on the CPU the time not spent in forward.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

#: Stages reported, in pipeline order.
STAGES = (
    "decode",
    "decode_wait",
    "upload",
    "forward",
    "download",
    "device_wait",
    "write",
    "write_wait",
)


@dataclass
class _Span:
    stage: str
    start: torch.cuda.Event | float
    end: torch.cuda.Event | float


@dataclass
class StageClock:
    """Accumulates seconds per stage for one run; a disabled clock records nothing."""

    device: torch.device
    enabled: bool = False
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    _spans: list[_Span] = field(default_factory=list)
    _start: float = field(default_factory=time.perf_counter)

    def restart(self) -> None:
        """Forget what was recorded (a compile warm-up) and start the wall clock now."""
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self._spans = []
        self._start = time.perf_counter()

    def add(self, stage: str, seconds: float) -> None:
        """Add host-side seconds measured elsewhere (decode workers, the writer thread)."""
        if self.enabled:
            self.seconds[stage] += seconds

    @contextlib.contextmanager
    def host(self, stage: str) -> Iterator[None]:
        """Time a block on the calling thread (the loop waiting on the loader or writer)."""
        if not self.enabled:
            yield
            return
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - start

    def mark(self, stream: torch.cuda.Stream | None = None) -> torch.cuda.Event | float | None:
        """A point on the device timeline: an event on `stream` (GPU) or now (CPU)."""
        if not self.enabled:
            return None
        if self.device.type != "cuda":
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record(stream)
        return event

    def span(self, stage: str, start, end) -> None:
        """Record a device stage between two marks; read at `report` time."""
        if self.enabled:
            self._spans.append(_Span(stage, start, end))

    def report(self, images: int, batch_size: int | None = None) -> dict:
        """Seconds and shares per stage, the device idle share and peak device memory,
        for `images` done at `batch_size`.

        Synchronises the device once (the events must have completed).
        """
        wall = time.perf_counter() - self._start
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = dict(self.seconds)
        forwards: list[tuple[float, float]] = []
        origin = self._spans[0].start if self._spans else None
        for span in self._spans:
            length = _elapsed(span.start, span.end)
            seconds[span.stage] += length
            if span.stage == "forward":
                begin = _elapsed(origin, span.start)
                forwards.append((begin, begin + length))
        busy = seconds["forward"]
        gaps = sum(max(0.0, b[0] - a[1]) for a, b in itertools.pairwise(forwards))
        steady = forwards[-1][1] - forwards[0][0] if forwards else 0.0
        cuda = self.device.type == "cuda"
        return {
            "device": str(self.device),
            "images": images,
            "batch_size": batch_size,
            "wall_s": round(wall, 4),
            "stages_s": {k: round(v, 4) for k, v in seconds.items()},
            "ms_per_image": {
                k: round(1000 * v / images, 3) if images else None for k, v in seconds.items()
            },
            "device_idle_share": round(max(0.0, 1 - busy / wall), 4) if wall > 0 else None,
            # between the first forward's start and the last one's end: start-up excluded
            "device_idle_share_steady": round(gaps / steady, 4) if steady > 0 else None,
            # the whole process on this GPU, model load included; None on the CPU
            "peak_device_memory_bytes": torch.cuda.max_memory_allocated(self.device)
            if cuda
            else None,
        }


def _elapsed(start, end) -> float:
    """Seconds between two marks of the same kind."""
    if isinstance(start, float):
        return end - start
    return start.elapsed_time(end) / 1000


def describe(profile: dict) -> str:
    """The profile as a few lines for stderr."""
    wall = profile["wall_s"]
    lines = [
        f"profile ({profile['device']}, {profile['images']} images, batch "
        f"{profile['batch_size']}, {wall:.2f} s wall):"
    ]
    for stage in STAGES:
        s = profile["stages_s"][stage]
        per = profile["ms_per_image"][stage]
        share = f"{100 * s / wall:5.1f} % of wall" if wall > 0 else ""
        per_text = f"{per:9.2f} ms/image" if per is not None else ""
        lines.append(f"  {stage:<11} {s:9.3f} s {per_text}  {share}")
    idle, steady = profile["device_idle_share"], profile["device_idle_share_steady"]
    if idle is not None:
        between = "" if steady is None else f", {100 * steady:.1f} % between forwards"
        lines.append(f"  device idle {100 * idle:.1f} % of wall{between}")
    if profile["peak_device_memory_bytes"] is not None:
        lines.append(f"  peak device memory {profile['peak_device_memory_bytes'] / 2**30:.2f} GiB")
    return "\n".join(lines)
