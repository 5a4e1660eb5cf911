"""The whole extract job, for the CLI and for Python: `extract(inputs, output, ...)`.

Order matters, so that nothing is lost and nothing heavy starts before a mistake is found:

1. options are parsed and checked against each other (no files, no weights);
2. OUT is checked: it must be this tool's output (or absent) and not being written by
   another run, and a resume must agree with the settings it records, for every setting
   that needs neither the device nor the weights; settings not given are taken from OUT;
3. the device is chosen, and the precision checked against it and OUT;
4. the inputs are listed (rank 0 under torchrun), and a resume's box file checked;
5. the weights are resolved (downloaded, hashed) and the rest is checked against them;
6. only then is OUT created, resumed or (with `overwrite`) replaced, and the work runs.

Steps 1 and 2 run before torch is imported, which takes seconds: a mistake they find is
reported at once. So this module imports what needs torch in the functions that use it.
What OUT must agree with, and what it supplies, is engine/resume.py's.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from sapiens2_cli import __version__
from sapiens2_cli.config.choices import CompileMode, OutputFormat
from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.model import PIXEL_MEAN, PIXEL_STD
from sapiens2_cli.inputs.items import Preprocess
from sapiens2_cli.config.options import ExtractOptions, check_box_options, check_pool
from sapiens2_cli.scaleout.ranks import Ranks
from sapiens2_cli.engine.resume import box_settings, check_resume, settle_options
from sapiens2_cli.inputs.sources import Listing, Source, expand, list_files
from sapiens2_cli.reduce.projection import projection_settings
from sapiens2_cli.remote import is_url, local_path
from sapiens2_cli.config.settings import OutputSettings
from sapiens2_cli.output import check_output_path, existing_settings, infer_format, open_writer
from sapiens2_cli.output.base import FORMAT_VERSION, OutputLock, lock_path
from sapiens2_cli.output.npy.writer import Sink
from sapiens2_cli.output.reader import detect_format, is_output
from sapiens2_cli.reduce.losses import reductions_for

if TYPE_CHECKING:
    import torch

    from sapiens2_cli.scaleout.distributed import RankGroup
    from sapiens2_cli.scaleout.part_job import PartJob
    from sapiens2_cli.engine.progress import Progress, ProgressStep, Summary
    from sapiens2_cli.engine.runner import Extraction
    from sapiens2_cli.weights.resolve import Weights


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
    from sapiens2_cli.inputs.tar import expand_patterns

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
    if is_url(str(output)):
        from sapiens2_cli.engine.url_output import run_at_url

        return run_at_url(
            str(output), opts, lambda out, sink: _run(opts, paths, out, stdin, progress, sink)
        )
    return _run(opts, paths, Path(local_path(str(output))), stdin, progress)


def _run(
    opts: ExtractOptions,
    inputs: list[str],
    output: Path,
    stdin: BinaryIO | None,
    progress: bool | Callable[[ProgressStep], None],
    sink: Sink | None = None,
) -> Summary | None:
    """The steps of the module docstring, in order."""
    fmt = _check_options(opts, output)
    ranks = Ranks.from_env()
    part = ranks.part(opts.shard)
    path = output if part is None else part.path(output, fmt)  # what this process writes
    opts, existing = _check_output(opts, path, fmt)
    # Every check that needs neither torch nor the inputs has passed: torch from here.
    from sapiens2_cli.engine.device import resolve_device
    from sapiens2_cli.scaleout.distributed import RankGroup
    from sapiens2_cli.scaleout.part_job import PartJob
    from sapiens2_cli.engine.resume import settle_precision
    from sapiens2_cli.engine.runner import OutputSpec

    device = ranks.pin(resolve_device(opts.device))
    opts = settle_precision(opts, existing, device, path)
    out = OutputSpec(
        path=output,
        format=fmt,
        overwrite=opts.overwrite,
        compression=opts.compression,
        shard_rows=opts.rows_per_shard,
        retry_failed=opts.retry_failed,
        sink=sink,
    )
    with RankGroup(ranks, device) as group:
        job = PartJob.plan(group, out, opts.shard, opts.merge)
        files, sources = _list_inputs(group, opts, inputs, stdin)
        check_resume(path, existing, box_settings(sources))
        weights = group.first(lambda: _resolve_and_hash(opts))
        extraction = _open(opts, weights, existing, job, files, sources, device)
        bar = _progress(group, len(extraction.pending), progress)
        summary = job.finish(extraction.run(bar=bar))
    if summary is not None and job.next_step():
        summary = replace(summary, next_step=job.next_step())
    return summary


def _check_options(opts: ExtractOptions, output: Path) -> OutputFormat:
    """Step 1 (ExtractOptions checked the rest when made): the output format, and the
    options that apply to one format or kind of input only."""
    check_box_options(opts)
    fmt = infer_format(output, opts.format or _output_format(output))
    if opts.compression is not None and fmt != OutputFormat.H5:
        raise Sapiens2Error("--compression applies to HDF5 output only: drop it or use -o x.h5")
    if opts.rows_per_shard is not None and fmt != OutputFormat.NPY:
        raise Sapiens2Error("--rows-per-shard applies to npy output only: drop it")
    return fmt


def _output_format(path: Path) -> OutputFormat | None:
    """The format of the output at `path`, which a resume keeps; None when there is none."""
    return detect_format(path) if is_output(path) else None


def _check_output(
    opts: ExtractOptions, path: Path, fmt: OutputFormat
) -> tuple[ExtractOptions, dict | None]:
    """Step 2: OUT may be written, and is not being written by another run (open_writer
    takes the lock that guarantees it; this only asks early); the options settled against
    what it records."""
    check_output_path(path, fmt, opts.overwrite)
    existing = None if opts.overwrite else existing_settings(path)
    opts = settle_options(opts, existing, path)
    if lock_path(path.resolve()).exists():  # the lock OutputLock takes: links followed
        OutputLock(path).release()
    return opts, existing


def _list_inputs(
    group: RankGroup, opts: ExtractOptions, inputs: list[str], stdin: BinaryIO | None
) -> tuple[list[str], list[Source]]:
    """Step 4, on rank 0: the input files, and the sources that expand them into items."""
    if opts.boxes is not None:
        from sapiens2_cli.inputs.boxes.crop import load_box_source

        crops = group.first(
            lambda: load_box_source(
                opts.boxes, inputs, opts.box_padding, opts.min_score, opts.include_crowd
            )
        )
        return crops.files, [*opts.sources, crops]
    sources = opts.source_list()
    extensions = frozenset().union(*(s.extensions for s in sources))
    listing = Listing(extensions, opts.hidden, opts.null)
    return group.first(lambda: list_files(inputs, opts.files_from, stdin, listing)), sources


def _resolve_and_hash(opts: ExtractOptions) -> Weights:
    """Step 5. Under torchrun, rank 0 alone downloads and hashes the weights; the other
    ranks on its machine (or sharing its cache folder) then read the sha256 from the hash
    cache instead of hashing the same file at the same time."""
    from sapiens2_cli.weights.resolve import checkpoint_sha256, resolve_weights

    weights = resolve_weights(opts.arch, opts.checkpoint)
    checkpoint_sha256(weights.path)
    return weights


def _layers(layers: Sequence[int], num_layers: int) -> tuple[int, ...]:
    """The model's block indices, each kept once (a row holds each block once)."""
    from sapiens2_cli.model.backbone import resolve_layers

    resolved = resolve_layers(layers, num_layers)
    if len(set(resolved)) != len(resolved):
        raise Sapiens2Error(f"--layers names a block twice ({list(layers)}): list each once")
    return resolved


def _open(
    opts: ExtractOptions,
    weights: Weights,
    existing: dict | None,
    job: PartJob,
    files: list[str],
    sources: list[Source],
    device: torch.device,
) -> Extraction:
    """Step 6: check the rest against the weights, expand this part's files into items,
    and open OUT (new, resumed or replaced): the first step that writes anything."""
    from sapiens2_cli.model.tokens import row_shape
    from sapiens2_cli.engine.runner import Extraction, FeatureSpec, RunOptions
    from sapiens2_cli.weights.resolve import checkpoint_sha256

    config = weights.info.config
    size = opts.size or config.image_size
    config.check_image_size(*size)
    layers = _layers(opts.layers, config.num_layers)
    grid = config.grid_size(*size)
    output = job.output
    check_pool(opts.pool, grid, size)
    projection, projected = projection_settings(opts.project, config.embed_dim, output.path)
    spec = FeatureSpec(
        prep=Preprocess(tuple(size), opts.resize, opts.jpeg_draft),
        layers=layers,
        tokens=opts.tokens,
        layout=opts.layout,
        dtype=opts.dtype,
        projection=projection,
        pool=opts.pool,
    )
    settings = OutputSettings(
        arch=weights.arch,
        checkpoint=weights.path.name,
        checkpoint_sha256=checkpoint_sha256(weights.path),
        image_size=list(size),
        grid_size=list(grid),
        embed_dim=config.embed_dim,
        mean=list(PIXEL_MEAN),
        std=list(PIXEL_STD),
        resize=opts.resize.value,
        jpeg_draft=opts.jpeg_draft,
        layers=list(layers),
        tokens=opts.tokens.value,
        layout=opts.layout.value,
        dtype=opts.dtype.value,
        pool=opts.pool,
        precision=opts.precision.value,
        weights_dtype=opts.weights_dtype.value,
        tool_version=__version__,
        format_version=FORMAT_VERSION,
        part=None if output.part is None else [output.part.index, output.part.count],
        **{k: v for source in sources for k, v in source.settings().items()},
        **projected,
    )
    check_resume(output.path, existing, settings.to_dict(), every=True)
    row = row_shape(
        spec.tokens,
        spec.layout,
        len(layers),
        grid,
        config.embed_dim,
        config.num_prefix_tokens,
        pool=spec.pool,
        k=None if projection is None else projection.k,
    )
    expansion = expand(job.take(files), sources)
    job.clear_stale()
    writer, done = open_writer(
        output.path,
        output.format,
        settings.to_dict(),
        tuple(row),
        spec.dtype.numpy,
        overwrite=output.overwrite,
        compression=output.compression and output.compression.value,
        shard_rows=output.shard_rows,
        reductions=reductions_for(opts.pool, opts.dtype, projection),
        sink=output.sink,
    )

    def wanted(key: str) -> bool:
        return key not in done and (output.retry_failed or key not in writer.failed)

    pending = [item for item in expansion.items if wanted(item.key)]
    run = RunOptions(
        device=device,
        precision=opts.precision.torch,
        batch_size=opts.batch_size,
        workers=opts.workers,
        weights_dtype=opts.weights_dtype.torch,
        compile=(opts.compile_mode or CompileMode.DEFAULT) if opts.compile else None,
        profile=opts.profile,
    )
    return Extraction(
        weights=weights,
        spec=spec,
        run_options=run,
        grid=grid,
        writer=writer,
        format=output.format,
        pending=pending,
        skipped=len(expansion.items) - len(pending),
        failures=[(f.key, f.reason) for f in expansion.failures if wanted(f.key)],
        ignored=expansion.ignored,
    )


def _progress(
    group: RankGroup, pending: int, progress: bool | Callable[[ProgressStep], None]
) -> Progress:
    """The bar (summed over ranks under torchrun), or the caller's function per batch."""
    if callable(progress):
        from sapiens2_cli.engine.progress import CallbackProgress

        return CallbackProgress(pending, progress)
    return group.progress(pending, bool(progress))
