"""The rules between extract's options that need no files or weights, each checked once:
when the options are made (`check_options`), once OUT's format is known
(`check_box_options`), and once the grid is (`check_pool`)."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import TYPE_CHECKING

from sapiens2_cli.config.choices import Engine, Layout, ResizeMode, TokenMode
from sapiens2_cli.errors import Sapiens2Error

if TYPE_CHECKING:
    from sapiens2_cli.config.options import ExtractOptions


def check_options(opts: ExtractOptions, defaults: SimpleNamespace) -> None:
    """The rules between options that need no files or weights, each checked once."""
    for flag, value, least in (
        ("--pool", opts.pool, 1),
        ("--rows-per-shard", opts.rows_per_shard, 1),
        ("--workers", opts.workers, 0),
    ):
        if value is not None and not (isinstance(value, int) and value >= least):
            raise Sapiens2Error(f"{flag} must be a whole number of at least {least}, not {value!r}")
    if opts.fps is not None:
        if opts.every_frame:
            raise Sapiens2Error("--fps and --every-frame both choose the frames: give one")
        if not (isinstance(opts.fps, (int, float)) and 0 < opts.fps < math.inf):
            raise Sapiens2Error(
                f"--fps {opts.fps!r} must be a positive number, like 1 or 2.5 "
                "(--every-frame keeps them all)"
            )
    if opts.engine == Engine.RAY and opts.shard is not None:
        raise Sapiens2Error(
            "--engine ray divides the job itself: drop --shard (or use --engine local)"
        )
    if opts.ray_address is not None and opts.engine != Engine.RAY:
        raise Sapiens2Error("--ray-address applies with --engine ray: add it, or drop it")
    if opts.compile_mode is not None and not opts.compile:
        raise Sapiens2Error(
            f"--compile-mode {opts.compile_mode} applies with --compile: add --compile, "
            "or drop --compile-mode"
        )
    tokens, layout = opts.tokens or defaults.tokens, opts.layout or defaults.layout
    if layout == Layout.MAP and tokens != TokenMode.PATCH:
        raise Sapiens2Error(
            f"--layout map needs --tokens patch (the {tokens} tokens are not a grid)"
        )
    if (opts.pool or defaults.pool) > 1 and tokens in (TokenMode.CLS, TokenMode.MEAN):
        raise Sapiens2Error(
            f"--pool pools the patch grid, which --tokens {tokens} does not keep: use "
            "--tokens patch or all"
        )


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
