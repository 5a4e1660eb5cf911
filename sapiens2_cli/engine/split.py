"""How one extract job is divided among processes, as the engine sees it.

The engine asks its split at each step that depends on it: which part this process writes,
which device the model runs on, who lists the inputs and resolves the weights, which input
files are this process's, how progress is counted, what runs the checked plan, and what
happens once the rows are written. `Split` itself is one process writing OUT; the splits
that divide a job (`--shard`, torchrun, Ray: scaleout/) sit above the engine, subclass it
and hand the engine theirs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from sapiens2_cli.config.values import Part

if TYPE_CHECKING:
    import torch

    from sapiens2_cli.engine.progress import Progress, Summary
    from sapiens2_cli.engine.runner import Extraction, OutputSpec

T = TypeVar("T")


class Split:
    """One process, writing OUT itself."""

    #: The part of OUT this process writes; None: OUT itself.
    part: Part | None = None

    def output_path(self, out: Path, fmt: str) -> Path:
        """What this process writes, for the checks that come before torch is imported."""
        return out

    def device(self, requested: str) -> torch.device:
        """The device the model runs on, for `--device requested` (an engine whose model
        runs elsewhere asks there)."""
        from sapiens2_cli.engine.device import resolve_device

        return self.pin(resolve_device(requested))

    def pin(self, device: torch.device) -> torch.device:
        """The device this process runs on, of the one asked for."""
        return device

    @contextlib.contextmanager
    def running(self, device: torch.device) -> Iterator[None]:
        """Around the work: a process group, say, joined on entry and left on exit."""
        yield

    def plan(self, out: OutputSpec) -> OutputSpec:
        """Check what lies beside OUT; what this process writes."""
        return out

    def first(self, make: Callable[[], T]) -> T:
        """`make()`, run once for the whole job (listing inputs, hashing the weights)."""
        return make()

    def take(self, files: list[str]) -> list[str]:
        """This process's share of the input files, in the listing's order."""
        return files

    def clear_stale(self) -> None:
        """Remove what an earlier split left and `--overwrite` replaces; called once every
        check has passed, just before writing."""

    def progress(self, pending: int, enabled: bool) -> Progress:
        """A bar over the job's pending items."""
        from sapiens2_cli.engine.progress import Progress

        return Progress(pending, enabled)

    def run(self, extraction: Extraction, bar: Progress) -> Summary:
        """Make the checked plan's rows: this process's loop (engine/runner.py)."""
        return extraction.run(bar=bar)

    def finish(self, summary: Summary) -> Summary | None:
        """The job's summary once this process's rows are written; None where another
        process reports for the job."""
        return summary

    def next_step(self) -> str | None:
        """What the user runs next, if anything (e.g. joining parts)."""
        return None
