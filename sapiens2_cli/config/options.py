"""The options record of `sapiens2 extract` and the defaults of what it computes and keeps,
declared here once (the CLI's help texts are built from them).

Everything here needs no files, weights or torch, and this module imports nothing heavy,
so the CLI can read the defaults while building `--help` and a mistake is reported at once.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from sapiens2_cli.config.choices import (
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
from sapiens2_cli.config.values import Part, parse_batch_size, parse_layers, parse_shard, parse_size
from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.remote import is_url

#: Images per forward pass unless --batch-size says otherwise.
DEFAULT_BATCH_SIZE = 8


@dataclass(frozen=True)
class SettingDefaults:
    """What each setting left out takes on a new output (a resume takes OUT's instead)."""

    resize: ResizeMode = ResizeMode.STRETCH
    layers: tuple[int, ...] = (-1,)  # the last block
    tokens: TokenMode = TokenMode.PATCH
    layout: Layout = Layout.TOKENS
    dtype: StorageDtype = StorageDtype.FLOAT16
    pool: int = 1  # no pooling
    jpeg_draft: bool = False
    box_padding: float = 1.25  # upstream's `PoseGetBBoxCenterScale(padding=1.25)`
    # Video frames kept per second (0: every frame). One a second keeps distinct poses and
    # scenes of human video (people move on that scale) at 1/25-1/60 of the cost of every
    # frame, and gives a row count anyone can predict (one per second of video).
    video_fps: float = 1.0
    # Parquet / Arrow inputs: None finds the image column by type, and keys rows FILE#row=N
    image_column: str | None = None
    key_column: str | None = None


DEFAULTS = SettingDefaults()


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
    pool: int | None = None  # K: the mean of each KxK block of patch tokens
    jpeg_draft: bool | None = None
    project: Path | None = None  # a projection file from `sapiens2 pca`
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
    batch_size: int | str | None = DEFAULT_BATCH_SIZE  # None or "auto": the largest that fits
    workers: int | None = None
    compile: bool = False
    compile_mode: CompileMode | None = None  # with compile; default "default"
    profile: bool = False
    # splitting: --shard I/N, and how torchrun's rank 0 joins the parts
    shard: Part | None = None
    merge: MergeMode = MergeMode.VIRTUAL
    # listing
    files_from: tuple[Path | str, ...] = ()  # str: a URL (remote.py)
    hidden: bool = False
    null: bool = False
    # videos: frames kept per second (DEFAULTS, or OUT's on a resume), or every frame
    fps: float | None = None
    every_frame: bool = False
    # person crops: one row per box of a box file (inputs/boxes/crop.py), INPUT its image folder
    boxes: Path | str | None = None  # str: a URL
    box_padding: float | None = None  # DEFAULTS, or OUT's on a resume
    min_score: float | None = None
    include_crowd: bool = False
    # Parquet / Arrow inputs: the image column when several hold images; keys from a column
    image_column: str | None = None
    key_column: str | None = None

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
        return 0.0 if self.every_frame else self.fps


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
