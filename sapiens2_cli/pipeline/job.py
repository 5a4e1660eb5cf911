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
"""

from __future__ import annotations

import io
import logging
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

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
from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.model import ARCHS, PIXEL_MEAN, PIXEL_STD
from sapiens2_cli.pipeline.items import Preprocess
from sapiens2_cli.pipeline.ranks import Ranks
from sapiens2_cli.pipeline.sources import Listing, Source, default_sources, expand, list_files
from sapiens2_cli.settings import OutputSettings, difference
from sapiens2_cli.values import parse_batch_size, parse_layers, parse_size
from sapiens2_cli.writers import check_output_path, existing_settings, infer_format, open_writer
from sapiens2_cli.writers.base import FORMAT_VERSION, OutputLock, lock_path
from sapiens2_cli.writers.parts import Part, parse_shard
from sapiens2_cli.writers.reader import detect_format, is_output

if TYPE_CHECKING:
    import torch

    from sapiens2_cli.pipeline.distributed import RankGroup
    from sapiens2_cli.pipeline.extract import Extraction
    from sapiens2_cli.pipeline.parts import PartJob
    from sapiens2_cli.pipeline.progress import Progress, ProgressStep, Summary
    from sapiens2_cli.pipeline.weights import Weights

log = logging.getLogger(__name__)

#: Defaults of the settings that, when not given, come from OUT on a resume.
DEFAULTS = {
    "resize": ResizeMode.STRETCH,
    "layers": (-1,),
    "tokens": TokenMode.PATCH,
    "layout": Layout.TOKENS,
    "dtype": StorageDtype.FLOAT16,
    "jpeg_draft": False,
    "box_padding": 1.25,
    "video_fps": 1.0,  # pipeline/video.py DEFAULT_FPS (not imported: it loads PyAV)
}


@dataclass(frozen=True)
class ExtractOptions:
    """Every option of `sapiens2 extract` (docs/cli.md), one field per flag, named after it.
    Choices, `size`, `layers` and `batch_size` also accept the CLI's text.

    Settings left None take, on a resume, the value OUT records, and otherwise the
    default in DEFAULTS; `size` defaults to the checkpoint's training size.
    """

    # weights: a local checkpoint, or an arch from the Hugging Face cache (default 1b)
    arch: str | None = None
    checkpoint: Path | None = None
    # what to compute and keep
    size: tuple[int, int] | str | None = None  # (H, W) or "HxW"
    resize: ResizeMode | None = None
    layers: tuple[int, ...] | int | str | None = None  # block indices; negative from the end
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
    weights_dtype: Precision = Precision.AUTO
    batch_size: int | str | None = 8  # None or "auto": the largest that fits
    workers: int | None = None
    compile: bool = False
    compile_mode: CompileMode | None = None  # with compile; default "default"
    profile: bool = False
    # splitting: --shard I/N, and how torchrun's rank 0 joins the parts
    shard: Part | None = None
    merge: MergeMode = MergeMode.VIRTUAL
    # listing
    files_from: tuple[Path, ...] = ()
    hidden: bool = False
    null: bool = False
    # videos: frames kept per second (default 1, or OUT's on a resume), or every frame
    fps: float | None = None
    every_frame: bool = False
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
            "weights_dtype": (Precision, "--weights-dtype"),
            "compile_mode": (CompileMode, "--compile-mode"),
            "merge": (MergeMode, "--merge"),
        }
        for name, (choice, flag) in parse.items():
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, choice.parse(value, flag))
        if isinstance(self.shard, str):
            object.__setattr__(self, "shard", parse_shard(self.shard))
        if self.layers is not None:
            object.__setattr__(self, "layers", parse_layers(self.layers))
        if self.size is not None:
            object.__setattr__(self, "size", parse_size(self.size))
        object.__setattr__(self, "batch_size", parse_batch_size(self.batch_size))
        files_from = self.files_from
        if isinstance(files_from, (str, os.PathLike)):
            files_from = (files_from,)
        object.__setattr__(self, "files_from", tuple(Path(f) for f in files_from))
        for flag, value, least in (
            ("--rows-per-shard", self.rows_per_shard, 1),
            ("--workers", self.workers, 0),
        ):
            if value is not None and not (isinstance(value, int) and value >= least):
                raise Sapiens2Error(
                    f"{flag} must be a whole number of at least {least}, not {value!r}"
                )
        if self.fps is not None:
            if self.every_frame:
                raise Sapiens2Error("--fps and --every-frame both choose the frames: give one")
            if not (isinstance(self.fps, (int, float)) and 0 < self.fps < math.inf):
                raise Sapiens2Error(
                    f"--fps {self.fps!r} must be a positive number, like 1 or 2.5 "
                    "(--every-frame keeps them all)"
                )
        if self.compile_mode is not None and not self.compile:
            raise Sapiens2Error(
                f"--compile-mode {self.compile_mode} applies with --compile: add --compile, "
                "or drop --compile-mode"
            )
        tokens, layout = self.tokens or DEFAULTS["tokens"], self.layout or DEFAULTS["layout"]
        if layout == Layout.MAP and tokens != TokenMode.PATCH:
            raise Sapiens2Error(
                f"--layout map needs --tokens patch (the {tokens} tokens are not a grid)"
            )

    @property
    def video_fps(self) -> float | None:
        """Video frames kept per second, as OUT records it (0: every frame); None if not given."""
        return 0.0 if self.every_frame else self.fps

    def source_list(self) -> list[Source]:
        from sapiens2_cli.pipeline.tar import TarSource
        from sapiens2_cli.pipeline.video import VideoSource

        fps = DEFAULTS["video_fps"] if self.video_fps is None else self.video_fps
        return [*self.sources, VideoSource(fps), TarSource(), *default_sources()]


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
    return _Job(opts, [str(p) for p in inputs], Path(output), stdin).run(progress)


class _Job:
    """One call of `extract`: the steps of the module docstring."""

    def __init__(
        self, opts: ExtractOptions, inputs: list[str], output: Path, stdin: BinaryIO | None
    ) -> None:
        self.opts, self.inputs, self.output, self.stdin = opts, inputs, output, stdin

    def run(self, progress: bool | Callable[[ProgressStep], None]) -> Summary | None:
        from sapiens2_cli.pipeline.tar import expand_patterns

        opts = self.opts
        self.inputs = expand_patterns(self.inputs)  # shards/{00000..00099}.tar
        _check_box_options(opts)
        fmt = infer_format(self.output, opts.format or _output_format(self.output))
        if opts.compression is not None and fmt != OutputFormat.H5:
            raise Sapiens2Error("--compression applies to HDF5 output only: drop it or use -o x.h5")
        if opts.rows_per_shard is not None and fmt != OutputFormat.NPY:
            raise Sapiens2Error("--rows-per-shard applies to npy output only: drop it")
        ranks = Ranks.from_env()
        part = ranks.part(opts.shard)
        path = self.output if part is None else part.path(self.output, fmt)  # what we write
        check_output_path(path, fmt, opts.overwrite)
        existing = None if opts.overwrite else existing_settings(path)
        opts = _settle(opts, existing)
        _check_not_busy(path)
        # Every check that needs neither torch nor the inputs has passed: torch from here.
        from sapiens2_cli.device import resolve_device
        from sapiens2_cli.pipeline.distributed import RankGroup
        from sapiens2_cli.pipeline.extract import OutputSpec
        from sapiens2_cli.pipeline.parts import PartJob

        device = ranks.pin(resolve_device(opts.device))
        opts = _settle_precision(opts, existing, device)
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


def _output_format(path: Path) -> OutputFormat | None:
    """The format of the output at `path`, which a resume keeps; None when there is none."""
    return detect_format(path) if is_output(path) else None


def _check_not_busy(path: Path) -> None:
    """Refuse now, before torch and the weights load, to write what another run is writing
    (open_writer takes the lock that guarantees it; this only asks early)."""
    if lock_path(path).exists():
        OutputLock(path).release()


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


def _settle(opts: ExtractOptions, existing: dict | None) -> ExtractOptions:
    """Settings not given taken from OUT (resume) or the defaults; given ones checked
    against OUT wherever neither the device nor the weights are needed for it."""
    existing = existing or {}
    given = {}
    for name, default in DEFAULTS.items():
        value = getattr(opts, name)
        if value is None:
            value = existing.get(name, default)
            value = tuple(value) if name == "layers" else value
        else:
            given[name] = value
        opts = replace(opts, **_fields(name, value))
    if opts.size is None and "image_size" in existing:
        opts = replace(opts, size=tuple(existing["image_size"]))
    elif opts.size is not None:
        given["image_size"] = list(opts.size)
    if opts.arch is None and opts.checkpoint is None and existing:
        if existing.get("arch") not in ARCHS:
            raise Sapiens2Error(
                f"the output was made with the checkpoint {existing.get('checkpoint')}: pass "
                "--checkpoint PATH to resume it"
            )
        opts = replace(opts, arch=existing["arch"])
    elif opts.arch is not None and existing.get("arch") not in (None, "custom"):
        given["arch"] = opts.arch
    _check_resume(existing, {k: v for k, v in given.items() if k != "layers"})  # layers: later
    return opts


def _fields(name: str, value: object) -> dict[str, object]:
    """The ExtractOptions fields that hold setting `name`: video_fps is two flags."""
    if name == "video_fps":
        return {"fps": value or None, "every_frame": value == 0}
    return {name: value}


def _settle_precision(
    opts: ExtractOptions, existing: dict | None, device: torch.device
) -> ExtractOptions:
    """The compute and weights dtypes on `device`: `auto` takes OUT's on a resume, as the
    other settings do (and says so where a new output would get another); given ones are
    checked against OUT."""
    from sapiens2_cli.device import resolve_precision, resolve_weights_dtype

    existing = existing or {}
    precision = opts.precision
    if precision == Precision.AUTO and "precision" in existing:
        precision = Precision.parse(existing["precision"], "--precision")
        here = resolve_precision(Precision.AUTO, device)
        if precision != here:
            log.warning(
                "--precision auto: resuming with %s, the precision OUT was made with "
                "(%s on this machine for a new output)",
                precision,
                here,
            )
    compute = resolve_precision(precision, device)
    weights = opts.weights_dtype
    if weights == Precision.AUTO and "weights_dtype" in existing:
        weights = Precision.parse(existing["weights_dtype"], "--weights-dtype")
    given = {"precision": compute, "weights_dtype": resolve_weights_dtype(weights, compute)}
    _check_resume(existing, given)
    return replace(opts, **given)


def _check_resume(existing: dict, given: dict[str, object]) -> None:
    """Refuse a resume whose given settings differ from those OUT records."""
    if not existing:
        return
    differs = difference(existing, {k: _plain(v) for k, v in given.items()}, given)
    if differs:
        raise Sapiens2Error(
            f"the output was made with different settings: {differs}; rerun with the "
            "same settings to resume (or leave them out to take OUT's), or pass "
            "--overwrite to start again"
        )


def _plain(value: object) -> object:
    """A setting as files store it."""
    if isinstance(value, tuple):
        return list(value)
    return value.value if hasattr(value, "value") else value


def _resolve_and_hash(opts: ExtractOptions) -> Weights:
    """Under torchrun, rank 0 alone downloads and hashes the weights; the other ranks on its
    machine (or sharing its cache folder) then read the sha256 from the hash cache instead
    of hashing the same file at the same time."""
    from sapiens2_cli.pipeline.weights import checkpoint_sha256, resolve_weights

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
    import torch

    from sapiens2_cli.pipeline.extract import Extraction, FeatureSpec, RunOptions
    from sapiens2_cli.pipeline.forward import select_tokens
    from sapiens2_cli.pipeline.weights import checkpoint_sha256

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
        weights_dtype=opts.weights_dtype.value,
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
        spec.dtype.numpy,
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
        precision=opts.precision.torch,
        batch_size=opts.batch_size,
        workers=opts.workers,
        weights_dtype=opts.weights_dtype.torch,
        compile=(opts.compile_mode or CompileMode.DEFAULT) if opts.compile else None,
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
    group: RankGroup, pending: int, progress: bool | Callable[[ProgressStep], None]
) -> Progress:
    if callable(progress):
        from sapiens2_cli.pipeline.progress import CallbackProgress

        return CallbackProgress(pending, progress)
    return group.progress(pending, bool(progress))
