"""One extract job in parts: which part this process writes, its share of the input files,
and, under torchrun, the join into OUT once every rank is done (the parts' files, their
names and which part an input belongs to: output/parts.py)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from sapiens2_cli.config.choices import MergeMode
from sapiens2_cli.scaleout.distributed import RankGroup
from sapiens2_cli.engine.progress import Summary
from sapiens2_cli.engine.runner import OutputSpec
from sapiens2_cli.output.merge import check_join_target, merge_outputs
from sapiens2_cli.output.parts import Part, check_split, part_index, parts_folder


@dataclass(frozen=True)
class PartJob:
    """What this process writes (OUT itself, or one part of it) and what it does at the end."""

    group: RankGroup
    target: OutputSpec  # OUT, as given
    output: OutputSpec  # what this process writes: OUT, or its part beside OUT
    part: Part | None
    merge: MergeMode
    joins: bool  # rank 0 of a torchrun job without --shard joins the parts into OUT

    @classmethod
    def plan(
        cls, group: RankGroup, out: OutputSpec, shard: Part | None, merge: MergeMode
    ) -> PartJob:
        """This process's part (`Ranks.part`); checks what lies beside OUT."""
        part = group.ranks.part(shard)
        if part is None:
            return cls(group, out, out, None, merge, joins=False)
        joins = group.ranks.distributed and shard is None
        check_split(out.path, part.count, out.overwrite, remove=False)
        if joins:
            check_join_target(out.path, out.format, out.overwrite)
        output = replace(out, path=part.path(out.path, out.format), part=part)
        return cls(group, out, output, part, merge, joins)

    def take(self, files: list[str]) -> list[str]:
        """This part's input files, in the listing's order."""
        if self.part is None:
            return files
        count, index = self.part.count, self.part.index
        return [f for f in files if part_index(f, count) == index]

    def clear_stale(self) -> None:
        """With --overwrite, part 0 deletes parts of a split into another number (checked
        by `plan`); called once every check has passed, just before writing."""
        if self.part is not None and self.part.index == 0:
            check_split(self.target.path, self.part.count, self.target.overwrite, remove=True)

    def finish(self, summary: Summary) -> Summary | None:
        """Every rank's counts summed, after rank 0 joined the parts into OUT (torchrun);
        None on the ranks that do not report."""
        if not self.group.ranks.distributed:
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
        count = self.part.count
        parts = [Part(k, count).path(self.target.path, self.target.format) for k in range(count)]
        merged = merge_outputs(parts, self.target.path, self.merge)
        return replace(total, output=str(merged.output), rows=merged.rows)

    def next_step(self) -> str | None:
        """What to run once this process's part is done, when no rank joins it."""
        if self.part is None or self.joins:
            return None
        return (
            f"{self.part} is done; once every part is, join them: sapiens2 merge "
            f"-o {self.target.path}"
        )
