"""The options of `sapiens2 extract`, each declared once: `ExtractOptions` has one field per
flag, named after it (docs/api.md), declared with `setting(...)` (config/settings.py says
what a declaration holds). The command line's flags (cli/extract.py), the defaults
(`DEFAULTS`), what OUT records and what a resume compares are all read from here.

Everything here needs no files, weights or torch, and this module imports nothing heavy,
so the CLI can read the declarations while building `--help` and a mistake is reported at
once.
"""

from __future__ import annotations

import math
import os
from collections.abc import Collection
from dataclasses import dataclass, fields, replace
from pathlib import Path
from types import SimpleNamespace

from sapiens2_cli.config.choices import (
    CompileMode,
    Compression,
    Engine,
    Layout,
    MergeMode,
    OutputFormat,
    Precision,
    ResizeMode,
    StorageDtype,
    TokenMode,
)
from sapiens2_cli.config.settings import (
    DERIVED,
    INPUTS,
    KEEP,
    MODEL,
    OUTPUT,
    RUNNING,
    Record,
    Setting,
    record_rank,
    setting,
    stored,
)
from sapiens2_cli.config.values import Part, parse_batch_size, parse_layers, parse_shard, parse_size
from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.remote import is_url


@dataclass(frozen=True)
class ExtractOptions:
    """Every option of `sapiens2 extract` (docs/cli.md), one field per flag, named after it.
    Choices, `size`, `layers`, `batch_size` and `shard` also accept the CLI's text.

    Options marked `from_out` are None until settled: on a resume they take the value OUT
    records, otherwise the declared default; `size` defaults to the checkpoint's training
    size and `arch` to OUT's (or 1b).
    """

    # -- Inputs
    files_from: tuple[Path | str, ...] = setting(
        "A file listing image paths, one a line.", INPUTS, default=(), cli=list[str] | None
    )
    null: bool = setting(
        "Paths on stdin and in --files-from end with NUL bytes (find -print0), not newlines.",
        INPUTS,
        default=False,
        flags=("--null", "-0"),
    )
    hidden: bool = setting(
        "Also walk hidden folders and take hidden files (names starting with a dot: "
        ".thumbnails/, macOS ._ files).",
        INPUTS,
        default=False,
    )
    boxes: Path | str | None = setting(  # str: a URL
        "Person boxes (COCO annotations or results JSON, JSONL or CSV path,x,y,w,h[,score]): "
        "one row per box, cropped as upstream's pose pipeline does; INPUT is the folder the "
        "box file's image names are relative to.",
        INPUTS,
        cli=str | None,
    )
    box_padding: float | None = setting(
        "With --boxes: crop size as a factor of the box (default {default:g}).",
        INPUTS,
        default=1.25,  # upstream's `PoseGetBBoxCenterScale(padding=1.25)`
        from_out=True,
        record="the crop's size as a factor of the box",
        resume=True,
        by_source=True,
    )
    min_score: float | None = setting(
        "With --boxes: leave out boxes scored below this (unscored kept).", INPUTS
    )
    include_crowd: bool = setting(
        "With --boxes: keep COCO crowd boxes (iscrowd 1).", INPUTS, default=False
    )
    # Video frames kept per second (0: every frame). One a second keeps distinct poses and
    # scenes of human video (people move on that scale) at 1/25-1/60 of the cost of every
    # frame, and gives a row count anyone can predict (one per second of video).
    fps: float | None = setting(
        "Videos: frames kept per second, by presentation time (default {default:g}, or "
        "OUT's on a resume).",
        INPUTS,
        default=1.0,
        from_out=True,
        record="video frames kept per second of presentation time (0: every frame)",
        record_as="video_fps",
        resume=True,
    )
    every_frame: bool = setting(
        "Videos: keep every frame (instead of --fps).", INPUTS, default=False
    )
    # Parquet / Arrow inputs: None finds the image column by type, and keys rows FILE#row=N
    image_column: str | None = setting(
        "Parquet / Arrow inputs: the image column, when several hold images (default: the "
        "binary column, or struct with a binary `bytes` field).",
        INPUTS,
        from_out=True,
        record="Parquet / Arrow inputs' image column",
        resume=True,
        by_source=True,
    )
    key_column: str | None = setting(
        "Parquet / Arrow inputs: key rows by this column's values (unique ids) instead of "
        "FILE#row=N.",
        INPUTS,
        from_out=True,
        record="Parquet / Arrow column whose values are keys",
        resume=True,
        by_source=True,
    )
    # -- Model: a local checkpoint, or an arch from the Hugging Face cache (default 1b)
    arch: str | None = setting(
        "Model size: {archs} (`sapiens2 archs`).",
        MODEL,
        flags=("--arch", "-a"),
        record="zoo name",
        resume=True,
    )
    checkpoint: Path | None = setting(
        "A local .safetensors checkpoint (pretrain or task); its arch is inferred.",
        MODEL,
        flags=("--checkpoint", "-c"),
    )
    size: tuple[int, int] | str | None = setting(  # (H, W) or "HxW"
        "Input size HxW, multiples of 16 (default: the arch's training size).",
        MODEL,
        cli=str | None,
        record="model input size",
        record_as="image_size",
        resume=True,
    )
    resize: ResizeMode | None = setting(
        "How an image is brought to the input size (letterbox records content_box)",
        MODEL,
        default=ResizeMode.STRETCH,
        from_out=True,
        choice=ResizeMode,
        record="`stretch` or `letterbox`",
        resume=True,
    )
    jpeg_draft: bool | None = setting(
        "Decode large JPEGs at a reduced scale (at least twice the input size) before the "
        "resize: faster, slightly different pixels (docs/performance.md); {default:on/off} "
        "by default.",
        MODEL,
        default=False,
        from_out=True,
        flags=("--jpeg-draft/--no-jpeg-draft",),
        record="JPEGs decoded at a reduced scale before the resize",
        resume=True,
    )
    # -- What to keep
    layers: tuple[int, ...] | int | str | None = setting(  # block indices; negative: from the end
        "Block indices to keep, e.g. -1 (the last) or 8,17 (default {default}).",
        KEEP,
        default=(-1,),
        from_out=True,
        cli=str | None,
        record="block indices, non-negative",
        resume=True,
    )
    tokens: TokenMode | None = setting(
        "Tokens a row keeps",
        KEEP,
        default=TokenMode.PATCH,
        from_out=True,
        choice=TokenMode,
        record="`patch`, `all`, `cls` or `mean`",
        resume=True,
    )
    project: Path | None = setting(  # a projection file from `sapiens2 pca`
        "A `sapiens2 pca` file: store (x - mean) @ components.T, k wide.", KEEP
    )
    layout: Layout | None = setting(
        "Row layout",
        KEEP,
        default=Layout.TOKENS,
        from_out=True,
        choice=Layout,
        record="`tokens` or `map`",
        resume=True,
    )
    dtype: StorageDtype | None = setting(
        "Storage dtype (once)",
        KEEP,
        default=StorageDtype.FLOAT16,
        from_out=True,
        choice=StorageDtype,
        cli=list[StorageDtype] | None,  # given twice is an error, not the last one winning
        record="storage dtype of `features`",
        resume=True,
    )
    pool: int | None = setting(  # K: the mean of each KxK block of patch tokens
        "Keep the mean of each KxK block of patch tokens (K divides the patch grid; --tokens "
        "patch or all): K^2 times fewer patch rows (docs/format.md#reductions).",
        KEEP,
        default=1,  # no pooling
        from_out=True,
        metavar="K",
        record="patch tokens averaged over KxK blocks (1: none)",
        resume=True,
    )
    # -- Output
    format: OutputFormat | None = setting("Default: from OUT's name", OUTPUT, choice=OutputFormat)
    compression: Compression | None = setting(
        "HDF5 only, lossless, slower", OUTPUT, choice=Compression
    )
    rows_per_shard: int | None = setting(
        "npy only: rows per shard (default: about 256 MiB of features).", OUTPUT
    )
    overwrite: bool = setting(
        "Replace OUT (only ever a sapiens2 output) instead of resuming it.",
        OUTPUT,
        default=False,
        flags=("--overwrite/--no-overwrite",),
    )
    shard: Part | str | None = setting(
        "I/N: write only part I (from 0) of N, beside OUT, for job arrays; join the parts "
        "with `sapiens2 merge` (docs/scaling.md).",
        OUTPUT,
        cli=str | None,
    )
    merge: MergeMode = setting(
        "Under torchrun, how rank 0 joins the ranks' parts into OUT",
        OUTPUT,
        default=MergeMode.VIRTUAL,
        choice=MergeMode,
    )
    retry_failed: bool = setting(
        "When resuming, try inputs that failed before again (default) or skip them.",
        OUTPUT,
        default=True,
        flags=("--retry-failed/--skip-failed",),
    )
    # -- Running
    batch_size: int | str | None = setting(  # None or "auto": the largest that fits
        "Images per forward pass, or auto: the largest of 256, 128, ... that fits in GPU "
        "memory (1 on CPU).",
        RUNNING,
        default=8,
        cli=str,
    )
    workers: int | None = setting(
        "Decode processes; 0 decodes in the main process (default: 1 on CPU, where the "
        "forward uses every core; all cores but two with a GPU).",
        RUNNING,
    )
    device: str = setting(
        "auto, cpu, cuda or cuda:N (auto: a GPU if there is one).", RUNNING, default="auto"
    )
    precision: Precision = setting(
        "Compute dtype; auto is bf16 autocast on GPUs that support it, fp16 on older GPUs, "
        "and on CPU bf16 with native bf16 (AMX, AVX-512 BF16), else fp32",
        RUNNING,
        default=Precision.AUTO,
        choice=Precision,
        record="how the model ran",
        resume=True,
    )
    weights_dtype: Precision = setting(
        "The dtype the weights are loaded in; auto is bf16 under bf16 precision, else fp32 "
        "(fp32 keeps them float32 under autocast)",
        RUNNING,
        default=Precision.AUTO,
        choice=Precision,
        record="the dtype the weights were loaded in",
        resume=True,
    )
    compile: bool = setting(
        "torch.compile the forward (compile time shown apart; slow start).",
        RUNNING,
        default=False,
    )
    compile_mode: CompileMode | None = setting(
        "With --compile", RUNNING, default=CompileMode.DEFAULT, choice=CompileMode, value=None
    )
    profile: bool = setting("Time each stage and show where the time went.", RUNNING, default=False)
    engine: Engine = setting("What runs the work", RUNNING, default=Engine.LOCAL, choice=Engine)
    ray_address: str | None = setting(
        "With --engine ray: the cluster to join (default: RAY_ADDRESS if set, else a Ray "
        "instance started for the run).",
        RUNNING,
    )

    def __post_init__(self) -> None:
        """Parse choices given as text and check what needs no files or weights."""
        for name, declared in declarations().items():
            value = getattr(self, name)
            if declared.choice is not None and value is not None:
                value = declared.choice.parse(value, declared.flag(name))
                object.__setattr__(self, name, value)
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
        lists = tuple(f if is_url(str(f)) else Path(f) for f in files_from)
        object.__setattr__(self, "files_from", lists)
        self._check()

    def _check(self) -> None:
        """The rules between options that need no files or weights, each checked once."""
        for flag, value, least in (
            ("--pool", self.pool, 1),
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
        if self.engine == Engine.RAY and self.shard is not None:
            raise Sapiens2Error(
                "--engine ray divides the job itself: drop --shard (or use --engine local)"
            )
        if self.ray_address is not None and self.engine != Engine.RAY:
            raise Sapiens2Error("--ray-address applies with --engine ray: add it, or drop it")
        if self.compile_mode is not None and not self.compile:
            raise Sapiens2Error(
                f"--compile-mode {self.compile_mode} applies with --compile: add --compile, "
                "or drop --compile-mode"
            )
        tokens, layout = self.tokens or DEFAULTS.tokens, self.layout or DEFAULTS.layout
        if layout == Layout.MAP and tokens != TokenMode.PATCH:
            raise Sapiens2Error(
                f"--layout map needs --tokens patch (the {tokens} tokens are not a grid)"
            )
        if (self.pool or DEFAULTS.pool) > 1 and tokens in (TokenMode.CLS, TokenMode.MEAN):
            raise Sapiens2Error(
                f"--pool pools the patch grid, which --tokens {tokens} does not keep: use "
                "--tokens patch or all"
            )

    @property
    def video_fps(self) -> float | None:
        """Video frames kept per second, as OUT records it (0: every frame); None if not given."""
        return 0.0 if self.every_frame else None if self.fps is None else float(self.fps)

    def with_defaults(self) -> ExtractOptions:
        """These options with every setting left out at its declared default (what a new
        output takes): for the building blocks used outside a job, which has no OUT."""
        left_out = {  # video_fps is two flags: --every-frame leaves --fps None
            name: s.default
            for name, s in declarations().items()
            if s.from_out and getattr(self, s.record_as or name) is None
        }
        return replace(self, **left_out) if left_out else self

    @property
    def image_size(self) -> list[int] | None:
        """`size` as OUT records it."""
        return None if self.size is None else list(self.size)


def declarations() -> dict[str, Setting]:
    """Each option's declaration, by field name, in declaration order."""
    return {f.name: f.metadata["setting"] for f in fields(ExtractOptions)}


#: What each option left out takes on a new output (a resume takes OUT's instead).
DEFAULTS = SimpleNamespace(**{name: s.default for name, s in declarations().items()})


def records() -> dict[str, Record]:
    """Every key OUT records, with its meaning and resume rule: the options OUT records,
    then the facts the run derives (config/settings.py)."""
    found = {}
    for name, s in declarations().items():
        if s.record is not None:
            flag = s.flag(name) + ("/--every-frame" if name == "fps" else "")
            found[s.record_as or name] = Record(s.record, flag if s.resume else None)
    every = {**found, **DERIVED}
    return {key: every[key] for key in sorted(every, key=record_rank)}


def resume_keys() -> dict[str, str]:
    """Settings a resume must match, with the flag that sets each."""
    return {key: r.resume for key, r in records().items() if r.resume}


def settings_docs() -> dict[str, str]:
    """Each settings key's one-line meaning."""
    return {key: r.doc for key, r in records().items()}


def recorded(opts: ExtractOptions) -> dict[str, object]:
    """The settings OUT records from settled, resolved options (as files store them),
    but those the input kinds record themselves (`by_source`)."""
    return {
        s.record_as or name: stored(getattr(opts, s.record_as or name))
        for name, s in declarations().items()
        if s.record is not None and not s.by_source
    }


def difference(existing: dict, wanted: dict, keys: Collection[str] | None = None) -> str | None:
    """The first setting a resume must match (of `keys`, default all; in the order OUT
    records them) that differs between `existing` and `wanted`, phrased for an error
    message, or None if they agree."""
    flags = resume_keys()
    for key in flags if keys is None else [k for k in flags if k in keys]:
        there, now = existing.get(key), wanted.get(key)
        if there != now:
            return f"{flags[key]} ({key} is {there!r} there, {now!r} now)"
    return None


def check_pool(pool: int, grid: tuple[int, int], size: tuple[int, int]) -> None:
    """--pool K must divide the patch grid (one line before any work)."""
    if grid[0] % pool or grid[1] % pool:
        raise Sapiens2Error(
            f"--pool {pool} does not divide the {grid[0]}x{grid[1]} patch grid of --size "
            f"{size[0]}x{size[1]}: choose a K that divides both, or another --size"
        )


def check_box_options(opts: ExtractOptions) -> None:
    """Box options need --boxes; crops have no letterbox and decode JPEGs in full.

    Not in `__post_init__`: settling the options (engine/resume.py) fills in
    `box_padding` with or without --boxes."""
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
