"""One process's extract job (`run_job`), which `sapiens2_cli.extract` (scaleout/launch.py)
runs under the split it chose: one process, or one part of a split job.

Order matters, so that nothing is lost and nothing heavy starts before a mistake is found:

1. options are parsed and checked against each other (no files, no weights);
2. OUT is checked: it must be this tool's output (or absent) and not being written by
   another run, and a resume must agree with the settings it records, for every setting
   that needs neither the device nor the weights; settings not given are taken from OUT;
3. the device is chosen, and the precision checked against it and OUT;
4. the inputs are listed (once for the job: `Split.first`), and a resume's box file checked;
5. the weights are resolved (downloaded, hashed) and the rest is checked against them;
6. only then is OUT created, resumed or (with `overwrite`) replaced, and the work runs.

Steps 1 and 2 run before torch is imported, which takes seconds: a mistake they find is
reported at once. So this module imports what needs torch in the functions that use it.
What OUT must agree with, and what it supplies, is engine/resume.py's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from sapiens2_cli.config.choices import OutputFormat
from sapiens2_cli.config.options import ExtractOptions
from sapiens2_cli.config.records import recorded
from sapiens2_cli.config.rules import check_box_options, check_pool
from sapiens2_cli.config.settings import in_record_order
from sapiens2_cli.engine.resume import box_settings, check_resume, settle_options
from sapiens2_cli.engine.split import Split
from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.inputs.sources import Listing, Source, expand, list_files
from sapiens2_cli.model import PIXEL_MEAN, PIXEL_STD
from sapiens2_cli.output import check_output_path, existing_settings, infer_format, open_writer
from sapiens2_cli.output.lock import OutputLock, lock_path
from sapiens2_cli.output.npy.writer import Sink
from sapiens2_cli.output.reader import detect_format, is_output
from sapiens2_cli.output.rows import FORMAT_VERSION
from sapiens2_cli.reduce.losses import reductions_for
from sapiens2_cli.reduce.projection import projection_settings
from sapiens2_cli.version import __version__

if TYPE_CHECKING:
    import torch

    from sapiens2_cli.engine.progress import Progress, ProgressStep, Summary
    from sapiens2_cli.engine.runner import Extraction, OutputSpec
    from sapiens2_cli.model import Sapiens2Config
    from sapiens2_cli.weights.resolve import Weights


def run_job(
    opts: ExtractOptions,
    inputs: list[str],
    output: Path,
    split: Split,
    stdin: BinaryIO | None,
    progress: bool | Callable[[ProgressStep], None],
    sink: Sink | None = None,
) -> Summary | None:
    """The steps of the module docstring, in order, for this process's share of the job
    (`split`: one process, or one part of a split job)."""
    fmt = _check_options(opts, output)
    path = split.output_path(output, fmt)  # OUT, or the part of it this process writes
    opts, existing = _check_output(opts, path, fmt)
    # Every check that needs neither torch nor the inputs has passed: torch from here.
    from sapiens2_cli.engine.resume import settle_precision
    from sapiens2_cli.engine.runner import OutputSpec

    device = split.device(opts.device)
    opts = settle_precision(opts, existing, device, path)
    out = OutputSpec(path=output, format=fmt, overwrite=opts.overwrite, sink=sink)
    with split.running(device):
        mine = split.plan(out)
        files, sources = _list_inputs(split, opts, inputs, stdin)
        check_resume(path, existing, box_settings(sources))
        weights = split.first(lambda: _resolve_and_hash(opts))
        extraction = _open(opts, weights, existing, split, mine, files, sources, device)
        bar = _progress(split, len(extraction.pending), progress)
        summary = split.finish(split.run(extraction, bar))
    if summary is not None and split.next_step():
        summary = replace(summary, next_step=split.next_step())
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
    split: Split, opts: ExtractOptions, inputs: list[str], stdin: BinaryIO | None
) -> tuple[list[str], list[Source]]:
    """Step 4, on rank 0: the input files, and the sources that expand them into items."""
    if opts.boxes is not None:
        from sapiens2_cli.inputs.boxes.crop import load_box_source

        crops = split.first(
            lambda: load_box_source(
                opts.boxes, inputs, opts.box_padding, opts.min_score, opts.include_crowd
            )
        )
        return crops.files, [crops]
    from sapiens2_cli.inputs.registry import input_sources

    sources = input_sources(opts.video_fps, opts.image_column, opts.key_column)
    extensions = frozenset().union(*(s.extensions for s in sources))
    listing = Listing(extensions, opts.hidden, opts.null)
    return split.first(lambda: list_files(inputs, opts.files_from, stdin, listing)), sources


def _resolve_and_hash(opts: ExtractOptions) -> Weights:
    """Step 5. Under torchrun, rank 0 alone downloads and hashes the weights; the other
    ranks on its machine (or sharing its cache folder) then read the sha256 from the hash
    cache instead of hashing the same file at the same time."""
    from sapiens2_cli.weights.resolve import checkpoint_sha256, resolve_weights

    weights = resolve_weights(opts.arch, opts.checkpoint)
    checkpoint_sha256(weights.path)
    return weights


def _layers(layers: Sequence[int], config: Sapiens2Config) -> tuple[int, ...]:
    """The model's block indices, each kept once (a row holds each block once)."""
    from sapiens2_cli.model.backbone import resolve_layers

    resolved = resolve_layers(layers, config.num_layers)
    if len(set(resolved)) != len(resolved):
        raise Sapiens2Error(f"--layers names a block twice ({list(layers)}): list each once")
    return resolved


def _open(
    opts: ExtractOptions,
    weights: Weights,
    existing: dict | None,
    split: Split,
    output: OutputSpec,
    files: list[str],
    sources: list[Source],
    device: torch.device,
) -> Extraction:
    """Step 6: check the rest against the weights, expand this part's files into items,
    and open OUT (new, resumed or replaced): the first step that writes anything."""
    from sapiens2_cli.engine.runner import Extraction
    from sapiens2_cli.model.tokens import row_shape
    from sapiens2_cli.weights.resolve import checkpoint_sha256

    config = weights.info.config
    size = tuple(opts.size or config.image_size)
    config.check_image_size(*size)
    opts = replace(opts, arch=weights.arch, size=size, layers=_layers(opts.layers, config))
    grid = config.grid_size(*size)
    check_pool(opts.pool, grid, size)
    projection, projected = projection_settings(opts.project, config.embed_dim, output.path)
    settings = in_record_order(
        {
            **recorded(opts),
            "checkpoint": weights.path.name,
            "checkpoint_sha256": checkpoint_sha256(weights.path),
            "grid_size": list(grid),
            "embed_dim": config.embed_dim,
            "mean": list(PIXEL_MEAN),
            "std": list(PIXEL_STD),
            "tool_version": __version__,
            "format_version": FORMAT_VERSION,
            "complete": False,
            "part": None if output.part is None else [output.part.index, output.part.count],
            **{k: v for source in sources for k, v in source.settings().items()},
            **projected,
        }
    )
    check_resume(output.path, existing, settings, every=True)
    row = row_shape(
        opts.tokens,
        opts.layout,
        len(opts.layers),
        grid,
        config.embed_dim,
        config.num_prefix_tokens,
        pool=opts.pool,
        k=None if projection is None else projection.k,
    )
    expansion = expand(split.take(files), sources)
    split.clear_stale()
    writer, done = open_writer(
        output.path,
        output.format,
        settings,
        tuple(row),
        opts.dtype.numpy,
        overwrite=output.overwrite,
        compression=opts.compression and opts.compression.value,
        shard_rows=opts.rows_per_shard,
        reductions=reductions_for(opts.pool, opts.dtype, projection),
        sink=output.sink,
    )

    def wanted(key: str) -> bool:
        return key not in done and (opts.retry_failed or key not in writer.failed)

    pending = [item for item in expansion.items if wanted(item.key)]
    return Extraction(
        weights=weights,
        options=opts,
        device=device,
        grid=grid,
        projection=projection,
        writer=writer,
        format=output.format,
        pending=pending,
        skipped=len(expansion.items) - len(pending),
        failures=[(f.key, f.reason) for f in expansion.failures if wanted(f.key)],
        ignored=expansion.ignored,
    )


def _progress(
    split: Split, pending: int, progress: bool | Callable[[ProgressStep], None]
) -> Progress:
    """The bar (summed over ranks under torchrun), or the caller's function per batch."""
    if callable(progress):
        from sapiens2_cli.engine.progress import CallbackProgress

        return CallbackProgress(pending, progress)
    return split.progress(pending, bool(progress))
