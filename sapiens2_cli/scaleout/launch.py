"""`sapiens2_cli.extract(inputs, output, ...)`: the entry of every extract job, from the CLI
and from Python. It normalizes the arguments, picks how the job is divided (one process;
one part of it under `--shard` or torchrun; Ray's tasks and actors with `--engine ray`) and
runs the engine (engine/job.py) under that split, at a URL through a staging folder
(engine/url_output.py)."""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from sapiens2_cli.config.choices import Engine
from sapiens2_cli.config.options import ExtractOptions
from sapiens2_cli.engine.job import run_job
from sapiens2_cli.engine.split import Split
from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.inputs.patterns import expand_patterns
from sapiens2_cli.remote import is_url, local_path
from sapiens2_cli.scaleout.part_job import PartSplit
from sapiens2_cli.scaleout.ranks import Ranks

if TYPE_CHECKING:
    from sapiens2_cli.engine.progress import ProgressStep, Summary


def extract(
    inputs: Sequence[str | Path] | str | Path,
    output: str | Path,
    options: ExtractOptions | None = None,
    *,
    progress: bool | Callable[[ProgressStep], None] = False,
    stdin: BinaryIO | None = None,
    **overrides: object,
) -> Summary | None:
    """Extract features of every input into `output` (an .h5 file or an npy folder);
    calling it again with the same arguments resumes. Returns what the run did.

    `inputs`: paths, or one path. `options` and/or keyword overrides are ExtractOptions
    fields (`arch="0.4b"`, `layers=(8, -1)`, ...). `progress`: True draws a bar on stderr;
    a function gets a ProgressStep (this batch's rows and failures, the run's so far and
    its total) after each batch; False is silent. On Ctrl-C, the output is closed with
    everything committed and `Interrupted` (a KeyboardInterrupt carrying the summary so
    far) is raised. Under torchrun, ranks other than 0 return None (rank 0's summary covers
    them all). Problems with the inputs, options, weights or OUT raise Sapiens2Error before
    any work, with one line saying what to do.
    """
    unknown = sorted(set(overrides) - {f.name for f in fields(ExtractOptions)})
    if unknown:
        raise Sapiens2Error(
            f"extract() has no option {unknown[0]!r}: the options are the fields of "
            "ExtractOptions, one per flag of `sapiens2 extract` (docs/api.md)"
        )
    if isinstance(stdin, io.TextIOBase):
        raise Sapiens2Error(
            "stdin is a text stream: pass a binary one (sys.stdin.buffer, open(path, 'rb'), "
            "io.BytesIO), since paths are read as bytes"
        )
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    opts = replace(options or ExtractOptions(), **overrides)
    paths = expand_patterns([str(p) for p in inputs])  # shards/{00000..00099}.tar
    if stdin is None and sys.stdin is not None and "-" in paths:
        stdin = sys.stdin.buffer
    if opts.engine == Engine.RAY:
        if Ranks.from_env().distributed:
            raise Sapiens2Error(
                "--engine ray runs one driver and Ray divides the work: run it once, not "
                "under torchrun (or use --engine local)"
            )
        from sapiens2_cli.scaleout.ray.split import ray_split

        with ray_split(opts) as split:
            return _run(opts, paths, output, split, stdin, progress)
    return _run(opts, paths, output, split_of(opts), stdin, progress)


def _run(
    opts: ExtractOptions,
    paths: list[str],
    output: str | Path,
    split: Split,
    stdin: BinaryIO | None,
    progress: bool | Callable[[ProgressStep], None],
) -> Summary | None:
    """The engine under `split`, at a URL through a staging folder."""
    if is_url(str(output)):
        from sapiens2_cli.engine.url_output import run_at_url

        return run_at_url(
            str(output),
            opts,
            split.part is not None,
            lambda out, sink: run_job(opts, paths, out, split, stdin, progress, sink),
        )
    return run_job(opts, paths, Path(local_path(str(output))), split, stdin, progress)


def split_of(opts: ExtractOptions) -> Split:
    """How this process takes part in the job: alone, or as one part (--shard, torchrun)."""
    ranks = Ranks.from_env()
    if opts.shard is None and not ranks.distributed:
        return Split()
    return PartSplit(ranks, opts.shard, opts.merge)
