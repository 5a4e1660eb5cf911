"""One extract job in parts: which part this process writes, its share of the input files,
and, under torchrun, the join into OUT once every rank is done (the parts' files and names:
output/parts.py).

A file's part is fixed by a hash of its identity (crc32 of the path's bytes: the same on
every machine and Python), not by its position in the list: files added to a folder later
move no file to another part, so each part resumes exactly as a single run does, and every
row of a file (its boxes, frames or members) stays in one part.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from sapiens2_cli.config.choices import MergeMode
from sapiens2_cli.config.values import Part
from sapiens2_cli.engine.split import Split
from sapiens2_cli.output.parts import part_path
from sapiens2_cli.scaleout.ranks import Ranks

if TYPE_CHECKING:
    import torch

    from sapiens2_cli.engine.progress import Progress, Summary
    from sapiens2_cli.engine.runner import OutputSpec
    from sapiens2_cli.scaleout.distributed import RankGroup

T = TypeVar("T")


class PartSplit(Split):
    """This process writes one part of OUT: its `--shard`, its torchrun rank's, or both
    nested (`Ranks.part`); rank 0 of a torchrun job without --shard joins the parts."""

    def __init__(self, ranks: Ranks, given: Part | None, merge: MergeMode) -> None:
        """`given`: the part --shard names, if any."""
        self.ranks, self.merge = ranks, merge
        self.part = ranks.part(given)
        self.joins = ranks.distributed and given is None
        self.group: RankGroup | None = None  # while running
        self.target: OutputSpec | None = None  # OUT, as given (once planned)

    def output_path(self, out: Path, fmt: str) -> Path:
        return part_path(out, self.part, fmt)

    def pin(self, device: torch.device) -> torch.device:
        return self.ranks.pin(device)

    @contextlib.contextmanager
    def running(self, device: torch.device) -> Iterator[None]:
        from sapiens2_cli.scaleout.distributed import RankGroup

        with RankGroup(self.ranks, device) as group:
            self.group = group
            try:
                yield
            finally:
                self.group = None

    def plan(self, out: OutputSpec) -> OutputSpec:
        """Refuse parts of another split beside OUT, and a join target that is not ours."""
        from sapiens2_cli.output.merge import check_join_target
        from sapiens2_cli.output.parts import check_split

        check_split(out.path, self.part.count, out.overwrite, remove=False)
        if self.joins:
            check_join_target(out.path, out.format, out.overwrite)
        self.target = out
        return replace(out, path=self.output_path(out.path, out.format), part=self.part)

    def first(self, make: Callable[[], T]) -> T:
        return self.group.first(make)

    def take(self, files: list[str]) -> list[str]:
        count, index = self.part.count, self.part.index
        return [f for f in files if part_index(f, count) == index]

    def clear_stale(self) -> None:
        """With --overwrite, part 0 deletes parts of a split into another number (checked
        by `plan`)."""
        from sapiens2_cli.output.parts import check_split

        if self.part.index == 0:
            check_split(self.target.path, self.part.count, self.target.overwrite, remove=True)

    def progress(self, pending: int, enabled: bool) -> Progress:
        return self.group.progress(pending, enabled)

    def finish(self, summary: Summary) -> Summary | None:
        """Every rank's counts summed, after rank 0 joined the parts into OUT (torchrun);
        None on the ranks that do not report."""
        from sapiens2_cli.output.merge import merge_outputs
        from sapiens2_cli.output.parts import parts_folder

        if not self.ranks.distributed:
            return summary
        self.group.wait()
        every = self.group.gather(summary)
        if not self.group.leader:
            return None
        total = replace(
            summary,
            images=sum(s.images for s in every),
            failed=sum(s.failed for s in every),
            skipped=sum(s.skipped for s in every),
            seconds=max(s.seconds for s in every),
            output=str(parts_folder(self.target.path)),
            rows=sum(s.rows for s in every),
            failed_total=sum(s.failed_total for s in every),
            complete=all(s.complete for s in every),
        )
        if not self.joins:
            return total
        count, out = self.part.count, self.target
        parts = [part_path(out.path, Part(k, count), out.format) for k in range(count)]
        merged = merge_outputs(parts, out.path, self.merge)
        return replace(total, output=str(merged.output), rows=merged.rows)

    def next_step(self) -> str | None:
        """What to run once this process's part is done, when no rank joins it."""
        if self.joins:
            return None
        return (
            f"{self.part} is done; once every part is, join them: sapiens2 merge "
            f"-o {self.target.path}"
        )


def part_index(file: str, count: int) -> int:
    """The part, of `count`, that an input file (and every row it gives) belongs to."""
    return zlib.crc32(file.encode("utf-8", "surrogateescape")) % count
