"""The progress bar and the closing summary, both on stderr (stdout stays for --json)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass

from tqdm import tqdm

from sapiens2_cli.engine.profile import describe as describe_profile
from sapiens2_cli.text import plural

_OPTIONAL = (
    "compile_s",
    "profile",
    "batch_size",
    "next_step",
)  # left out of --json when not asked for


@dataclass
class Summary:
    """What a run did; `--json` prints it as one object."""

    images: int  # rows written by this run (an image, a person crop, a video frame)
    failed: int  # items that failed in this run
    skipped: int  # items already in OUT (or failed before, with --skip-failed)
    seconds: float
    output: str
    format: str
    rows: int  # rows in OUT now, this run's and earlier ones
    failed_total: int  # failure records in OUT now
    complete: bool  # every input has a row or a failure record
    ignored: int = 0  # members of inputs that are not images (tar files), counted only
    compile_s: float | None = None  # --compile: the warm-up compile (inside `seconds`)
    profile: dict | None = None  # --profile: seconds per stage (engine/profile.py)
    batch_size: int | None = None  # images per forward pass (what --batch-size auto chose)
    next_step: str | None = None  # what to run next (a --shard part: merge once all are done)

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict:
        data = {**asdict(self), "images_per_s": round(self.images_per_s, 3)}
        return {k: v for k, v in data.items() if v is not None or k not in _OPTIONAL}

    def describe(self) -> str:
        """The summary lines shown on stderr."""
        lines = [
            f"{plural(self.images, 'image')} done, {self.failed} failed, {self.skipped} "
            f"skipped as already done, in {self.seconds:.1f} s ({self.images_per_s:.2f} "
            f"images/s) -> {self.output} ({plural(self.rows, 'row')})"
        ]
        if self.ignored:
            lines.append(f"{plural(self.ignored, 'member')} of tar files ignored: not images")
        if self.compile_s is not None:
            lines.append(f"torch.compile warm-up took {self.compile_s:.1f} s of that")
        if self.profile is not None:
            lines.append(describe_profile(self.profile))
        if self.failed_total:
            where = "failed_paths/failed_errors" if self.format == "h5" else "manifest.json"
            has = "has" if self.failed_total == 1 else "have"
            lines.append(
                f"{plural(self.failed_total, 'input')} {has} no row; the reasons are in "
                f"{where} of {self.output}"
            )
        return "\n".join(lines)


class Progress:
    """A tqdm bar over the images to process, with the failures so far."""

    def __init__(self, total: int, enabled: bool) -> None:
        self._bar = tqdm(
            total=total,
            unit="img",
            file=sys.stderr,
            disable=not enabled or total == 0,
            dynamic_ncols=True,
        )
        self.failed = 0

    def update(self, done: int, failed: int) -> None:
        self.failed += failed
        self._bar.update(done + failed)
        if failed:
            self._bar.set_postfix(failed=self.failed, refresh=False)

    def close(self) -> None:
        self._bar.close()


@dataclass(frozen=True)
class ProgressStep:
    """What a progress function gets after each batch: this batch's counts (to add to a bar)
    and the run's so far with its total (to draw one)."""

    rows: int  # rows this batch wrote
    failed: int  # items of this batch that failed
    done: int  # items this run has processed so far, rows and failures
    total: int  # items this run processes (those already in OUT are not counted)


class CallbackProgress(Progress):
    """Progress reported to a function of a ProgressStep instead of a bar."""

    def __init__(self, total: int, report: Callable[[ProgressStep], None]) -> None:
        super().__init__(total, enabled=False)
        self._report = report
        self._total, self._done = total, 0

    def update(self, done: int, failed: int) -> None:
        super().update(done, failed)
        self._done += done + failed
        self._report(ProgressStep(done, failed, self._done, self._total))
