"""The whole extract job, for the CLI and for Python: `extract(inputs, output, ...)`.

Order matters, so that nothing is lost and nothing heavy starts before a mistake is found:

1. options are parsed and checked against each other (no files, no weights);
2. OUT is checked: it must be this tool's output (or absent), and a resume must agree
   with the settings it records, for every setting that needs no weights; settings not
   given are taken from OUT;
3. the inputs are listed (rank 0 under torchrun);
4. the weights are resolved (downloaded, hashed) and the rest is checked against them;
5. only then is OUT created, resumed or (with `overwrite`) replaced, and the work runs.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from sapiens2_cli import __version__
from sapiens2_cli.choices import (
    CompileMode,
    Compression,
    Layout,
    MergeMode,
    OutputFormat,
    Precision,
    ResizeMode,
    StorageDtype,
    TokenMode,
)
from sapiens2_cli.device import (
    PRECISION_DTYPES,
    precision_name,
    resolve_device,
    resolve_precision,
    resolve_weights_dtype,
)
from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.model import ARCHS, PIXEL_MEAN, PIXEL_STD
from sapiens2_cli.model.backbone import resolve_layers
from sapiens2_cli.pipeline.distributed import RankGroup, Ranks
from sapiens2_cli.pipeline.extract import (
    Extraction,
    FeatureSpec,
    OutputSpec,
    RunOptions,
)
from sapiens2_cli.pipeline.forward import select_tokens
from sapiens2_cli.pipeline.items import Preprocess
from sapiens2_cli.pipeline.parts import PartJob
from sapiens2_cli.pipeline.progress import Progress, Summary
from sapiens2_cli.pipeline.sources import Listing, Source, default_sources, expand, list_files
from sapiens2_cli.pipeline.weights import Weights, checkpoint_sha256, resolve_weights
from sapiens2_cli.settings import OutputSettings, difference
from sapiens2_cli.writers import check_output_path, existing_settings, infer_format, open_writer
from sapiens2_cli.writers.base import FORMAT_VERSION
from sapiens2_cli.writers.parts import Part, parse_shard

#: Defaults of the settings that, when not given, come from OUT on a resume.
DEFAULTS = {
    "resize": ResizeMode.STRETCH,
    "layers": (-1,),
    "tokens": TokenMode.PATCH,
    "layout": Layout.TOKENS,
    "dtype": StorageDtype.FLOAT16,
    "jpeg_draft": False,
    "box_padding": 1.25,
}


@dataclass(frozen=True)
class ExtractOptions:
    """Every option of `sapiens2 extract` (docs/cli.md). Choices accept their text.

    Settings left None take, on a resume, the value OUT records, and otherwise the
    default in DEFAULTS; `size` defaults to the checkpoint's training size.
    """

    # weights: a local checkpoint, or an arch from the Hugging Face cache (default 1b)
    arch: str | None = None
    checkpoint: Path | None = None
    # what to compute and keep
    size: tuple[int, int] | None = None  # (H, W)
    resize: ResizeMode | None = None
    layers: tuple[int, ...] | None = None  # block indices; negative count from the end
    tokens: TokenMode | None = None
    layout: Layout | None = None
    dtype: StorageDtype | None = None
    jpeg_draft: bool | None = None
    # output
    format: OutputFormat | None = None  # default: from OUT's name
    compression: Compression | None = None  # HDF5 only
    rows_per_shard: int | None = None  # npy only
    overwrite: bool = False
    retry_failed: bool = True
    # how to run
    device: str = "auto"
    precision: Precision = Precision.AUTO
    weights_dtype: str = "auto"
    batch_size: int | None = 8  # None: auto
    workers: int | None = None
    compile: CompileMode | None = None
    profile: bool = False
    # splitting: --shard I/N, and how torchrun's rank 0 joins the parts
    shard: Part | None = None
    merge: MergeMode = MergeMode.VIRTUAL
    # listing
    files_from: tuple[Path, ...] = ()
    hidden: bool = False
    null: bool = False
    # person crops: one row per box of a box file (pipeline/crop.py), INPUT its image folder
    boxes: Path | None = None
    box_padding: float | None = None  # default 1.25, or OUT's on a resume
    min_score: float | None = None
    include_crowd: bool = False
    #: extra sources, in front of the plain image source (see pipeline/sources.py)
    sources: tuple[Source, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        """Parse choices given as text and check what needs no files or weights."""
        parse = {
            "resize": (ResizeMode, "--resize"),
            "tokens": (TokenMode, "--tokens"),
            "layout": (Layout, "--layout"),
            "dtype": (StorageDtype, "--dtype"),
            "format": (OutputFormat, "--format"),
            "compression": (Compression, "--compression"),
            "precision": (Precision, "--precision"),
            "compile": (CompileMode, "--compile-mode"),
            "merge": (MergeMode, "--merge"),
        }
        for name, (choice, flag) in parse.items():
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, choice.parse(value, flag))
        if isinstance(self.shard, str):
            object.__setattr__(self, "shard", parse_shard(self.shard))
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(self.layers))
            if not self.layers:
                raise Sapiens2Error("--layers is empty: give block indices such as -1 or 8,17")
        if self.size is not None:
            object.__setattr__(self, "size", tuple(self.size))
        object.__setattr__(self, "files_from", tuple(self.files_from))
        for flag, value, least in (
            ("--rows-per-shard", self.rows_per_shard, 1),
            ("--batch-size", self.batch_size, 1),
            ("--workers", self.workers, 0),
        ):
            if value is not None and value < least:
                raise Sapiens2Error(f"{flag} must be at least {least}, not {value}")
        tokens, layout = self.tokens or DEFAULTS["tokens"], self.layout or DEFAULTS["layout"]
        if layout == Layout.MAP and tokens != TokenMode.PATCH:
            raise Sapiens2Error(
                f"--layout map needs --tokens patch (the {tokens} tokens are not a grid)"
            )

    def source_list(self) -> list[Source]:
        return [*self.sources, *default_sources()]


def extract(
    inputs: Sequence[str | Path],
    output: str | Path,
    options: ExtractOptions | None = None,
    *,
    progress: bool | Callable[[int, int], None] = False,
    stdin: BinaryIO | None = None,
    **overrides: object,
) -> Summary | None:
    """Extract features of every input into `output` (an .h5 file or an npy folder);
    calling it again with the same arguments resumes. Returns what the run did.

    `options` and/or keyword overrides are ExtractOptions fields (`arch="0.4b"`,
    `layers=(8, -1)`, ...). `progress`: True draws a bar on stderr; a function gets
    (rows done, failures) after each batch; False is silent. On Ctrl-C, the output is
    closed with everything committed and `Interrupted` (a KeyboardInterrupt carrying the
    summary so far) is raised. Under torchrun, ranks other than 0 return None (rank 0's
    summary covers them all). Problems with the inputs, options, weights or OUT raise
    Sapiens2Error before any work, with one line saying what to do.
    """
    opts = replace(options or ExtractOptions(), **overrides)
    return _Job(opts, [str(p) for p in inputs], Path(output), stdin).run(progress)


class _Job:
    """One call of `extract`: the steps of the module docstring."""

    def __init__(
        self, opts: ExtractOptions, inputs: list[str], output: Path, stdin: BinaryIO | None
    ) -> None:
        self.opts, self.inputs, self.output, self.stdin = opts, inputs, output, stdin

    def run(self, progress: bool | Callable[[int, int], None]) -> Summary | None:
        opts = self.opts
        _check_box_options(opts)
        fmt = infer_format(self.output, opts.format)
        if opts.compression is not None and fmt != OutputFormat.H5:
            raise Sapiens2Error("--compression applies to HDF5 output only: drop it or use -o x.h5")
        if opts.rows_per_shard is not None and fmt != OutputFormat.NPY:
            raise Sapiens2Error("--rows-per-shard applies to npy output only: drop it")
        ranks = Ranks.from_env()
        device = ranks.pin(resolve_device(opts.device))
        out = OutputSpec(
            self.output,
            fmt,
            opts.overwrite,
            opts.compression,
            opts.rows_per_shard,
            opts.retry_failed,
        )
        with RankGroup(ranks, device) as group:
            job = PartJob.plan(group, out, opts.shard, opts.merge)
            check_output_path(job.output.path, fmt, opts.overwrite)
            existing = None if opts.overwrite else existing_settings(job.output.path)
            opts = _settle(opts, existing, device)
            if opts.boxes is None:
                sources = opts.source_list()
                listing = Listing(
                    frozenset().union(*(s.extensions for s in sources)), opts.hidden, opts.null
                )
                files = group.first(
                    lambda: list_files(self.inputs, opts.files_from, self._stdin(), listing)
                )
            else:
                crops = group.first(lambda: _box_source(opts, self.inputs))
                sources, files = [*opts.sources, crops], crops.files
            _check_boxes_resume(existing, sources, job.output.path)
            weights = group.first(lambda: _resolve_and_hash(opts))
            extraction = _prepare(opts, weights, existing, job, files, sources, device)
            bar = _progress(group, len(extraction.pending), progress)
            summary = job.finish(extraction.run(bar=bar))
        if summary is not None and job.next_step():
            summary = replace(summary, next_step=job.next_step())
        return summary

    def _stdin(self) -> BinaryIO | None:
        if self.stdin is not None:
            return self.stdin
        return sys.stdin.buffer if sys.stdin is not None and "-" in self.inputs else None


def _check_box_options(opts: ExtractOptions) -> None:
    """Box options need --boxes; crops have no letterbox and decode JPEGs in full."""
    if opts.boxes is None:
        given = [
            flag
            for flag, value in (
                ("--box-padding", opts.box_padding),
                ("--min-score", opts.min_score),
                ("--include-crowd", opts.include_crowd or None),
            )
            if value is not None
        ]
        if given:
            raise Sapiens2Error(f"{given[0]} applies to person crops: add --boxes FILE")
        return
    if opts.resize == ResizeMode.LETTERBOX or opts.jpeg_draft:
        flag = "--resize letterbox" if opts.resize == ResizeMode.LETTERBOX else "--jpeg-draft"
        raise Sapiens2Error(f"{flag} does not apply to --boxes crops (upstream's crop): drop it")
    if opts.files_from or opts.null:
        raise Sapiens2Error("--boxes takes its images from the box file: drop --files-from/--null")


def _box_source(opts: ExtractOptions, inputs: list[str]) -> Source:
    from sapiens2_cli.pipeline.crop import load_box_source

    return load_box_source(opts.boxes, inputs, opts.box_padding, opts.min_score, opts.include_crowd)


def _check_boxes_resume(existing: dict | None, sources: list[Source], output: Path) -> None:
    """Rows of another kind (plain images, other boxes or padding) cannot share OUT."""
    if not existing:
        return
    from sapiens2_cli.pipeline.crop import box_settings_problem

    now = {k: v for s in sources for k, v in s.settings().items() if k.startswith("box")}
    problem = box_settings_problem(existing, now)
    if problem:
        raise Sapiens2Error(
            f"{output} cannot be resumed: {problem}, or pass --overwrite to start again"
        )


def _settle(opts: ExtractOptions, existing: dict | None, device: torch.device) -> ExtractOptions:
    """Settings not given taken from OUT (resume) or the defaults; given ones checked
    against OUT wherever no weights are needed for it."""
    existing = existing or {}
    given = {}
    for name, default in DEFAULTS.items():
        value = getattr(opts, name)
        if value is None:
            value = existing.get(name, default)
            value = tuple(value) if name == "layers" else value
        else:
            given[name] = value
        opts = replace(opts, **{name: value})
    if opts.size is None and "image_size" in existing:
        opts = replace(opts, size=tuple(existing["image_size"]))
    elif opts.size is not None:
        given["image_size"] = list(opts.size)
    precision = opts.precision
    if precision == Precision.AUTO and "precision" in existing:
        precision = Precision.parse(existing["precision"], "--precision")
    compute = resolve_precision(precision.value, device)
    given["precision"] = precision_name(compute)
    weights = opts.weights_dtype
    if weights.strip().lower() == "auto" and "weights_dtype" in existing:
        weights = existing["weights_dtype"]
    given["weights_dtype"] = precision_name(resolve_weights_dtype(weights, compute))
    opts = replace(opts, precision=Precision.parse(given["precision"], "--precision"))
    opts = replace(opts, weights_dtype=given["weights_dtype"])
    if opts.arch is None and opts.checkpoint is None and existing:
        if existing.get("arch") not in ARCHS:
            raise Sapiens2Error(
                f"the output was made with the checkpoint {existing.get('checkpoint')}: pass "
                "--checkpoint PATH to resume it"
            )
        opts = replace(opts, arch=existing["arch"])
    elif opts.arch is not None and existing.get("arch") not in (None, "custom"):
        given["arch"] = opts.arch
    if existing:
        wanted = {k: v for k, v in given.items() if k != "layers"}  # layers: after weights
        differs = difference(existing, {k: _plain(v) for k, v in wanted.items()}, wanted)
        if differs:
            raise Sapiens2Error(
                f"the output was made with different settings: {differs}; rerun with the "
                "same settings to resume (or leave them out to take OUT's), or pass "
                "--overwrite to start again"
            )
    return opts


def _plain(value: object) -> object:
    """A setting as files store it."""
    if isinstance(value, tuple):
        return list(value)
    return value.value if hasattr(value, "value") else value


def _resolve_and_hash(opts: ExtractOptions) -> Weights:
    """Under torchrun, rank 0 alone downloads and hashes the weights; the other ranks on its
    machine (or sharing its cache folder) then read the sha256 from the hash cache instead
    of hashing the same file at the same time."""
    weights = resolve_weights(opts.arch, opts.checkpoint)
    checkpoint_sha256(weights.path)
    return weights


def _layers(layers: Sequence[int], num_layers: int) -> tuple[int, ...]:
    """The model's block indices, each kept once (a row holds each block once)."""
    resolved = resolve_layers(layers, num_layers)
    if len(set(resolved)) != len(resolved):
        raise Sapiens2Error(f"--layers names a block twice ({list(layers)}): list each once")
    return resolved


def _prepare(
    opts: ExtractOptions,
    weights: Weights,
    existing: dict | None,
    job: PartJob,
    files: list[str],
    sources: list[Source],
    device: torch.device,
) -> Extraction:
    """Check the rest against the weights, expand this part's files into items, and open
    OUT (new, resumed or replaced): the first step that writes anything."""
    config = weights.info.config
    size = opts.size or config.image_size
    config.check_image_size(*size)
    layers = _layers(opts.layers, config.num_layers)
    grid = config.grid_size(*size)
    spec = FeatureSpec(
        Preprocess(tuple(size), opts.resize, opts.jpeg_draft),
        layers,
        opts.tokens,
        opts.layout,
        opts.dtype,
    )
    output = job.output
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
        precision=opts.precision.value,
        weights_dtype=opts.weights_dtype,
        tool_version=__version__,
        format_version=FORMAT_VERSION,
        part=None if output.part is None else [output.part.index, output.part.count],
        **{k: v for source in sources for k, v in source.settings().items()},
    )
    if existing:
        differs = settings.difference(existing)
        if differs:
            raise Sapiens2Error(
                f"{output.path} was made with different settings: {differs}; rerun with the "
                "same settings to resume, or pass --overwrite to start again"
            )
    # The shape one row will have, from the token selection run on the meta device.
    tokens = torch.empty(
        1, config.num_prefix_tokens + grid[0] * grid[1], config.embed_dim, device="meta"
    )
    row = select_tokens([tokens] * len(layers), spec.tokens, spec.layout, grid)
    expansion = expand(job.take(files), sources)
    job.clear_stale()
    writer, done = open_writer(
        output.path,
        output.format,
        settings.to_dict(),
        tuple(row.shape[1:]),
        np.dtype(spec.dtype.value),
        overwrite=output.overwrite,
        compression=output.compression and output.compression.value,
        shard_rows=output.shard_rows,
    )

    def wanted(key: str) -> bool:
        return key not in done and (output.retry_failed or key not in writer.failed)

    pending = [item for item in expansion.items if wanted(item.key)]
    failures = [(f.key, f.reason) for f in expansion.failures if wanted(f.key)]
    run = RunOptions(
        device=device,
        precision=PRECISION_DTYPES[opts.precision.value],
        batch_size=opts.batch_size,
        workers=opts.workers,
        weights_dtype=PRECISION_DTYPES[opts.weights_dtype],
        compile=opts.compile,
        profile=opts.profile,
    )
    skipped = len(expansion.items) - len(pending)
    return Extraction(
        weights,
        spec,
        run,
        grid,
        writer,
        output.format,
        pending,
        skipped,
        failures,
        expansion.ignored,
    )


def _progress(
    group: RankGroup, pending: int, progress: bool | Callable[[int, int], None]
) -> Progress:
    if callable(progress):
        return CallbackProgress(pending, progress)
    return group.progress(pending, bool(progress))


class CallbackProgress(Progress):
    """Progress reported to a function of (rows done, failures) instead of a bar."""

    def __init__(self, total: int, report: Callable[[int, int], None]) -> None:
        super().__init__(total, enabled=False)
        self._report = report

    def update(self, done: int, failed: int) -> None:
        super().update(done, failed)
        self._report(done, failed)
