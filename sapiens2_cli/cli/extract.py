"""`sapiens2 extract INPUT... -o OUT`: images in, features out, resumable, nothing lost."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from sapiens2_cli.cli.options import (
    INPUTS,
    KEEP,
    MODEL,
    OUTPUT,
    RUNNING,
    ArchOption,
    BatchSizeOption,
    CheckpointOption,
    DeviceOption,
    DtypeOption,
    JsonOption,
    PoolOption,
    PrecisionOption,
    QuietOption,
    SizeOption,
    choice_option,
    flag_option,
    given_once,
    in_panel,
    option,
)
from sapiens2_cli.config import choices
from sapiens2_cli.config.options import DEFAULT_BATCH_SIZE, DEFAULTS  # light: no torch


def extract_command(
    inputs: Annotated[
        list[str] | None,
        typer.Argument(
            help="Image, video, tar (.tar, .tar.gz, ...) or Parquet / Arrow (.parquet, .arrow) "
            "files, folders (walked recursively), brace patterns (shards/{00000..00099}.tar) "
            "or - to read paths from stdin.",
            show_default=False,
        ),
    ] = None,
    files_from: Annotated[
        list[str] | None,
        option("--files-from", help="A file listing image paths, one a line.", panel=INPUTS),
    ] = None,
    null: Annotated[
        bool,
        flag_option(
            "--null",
            "-0",
            help="Paths on stdin and in --files-from end with NUL "
            "bytes (find -print0), not newlines.",
            panel=INPUTS,
        ),
    ] = False,
    hidden: Annotated[
        bool,
        flag_option(
            "--hidden",
            help="Also walk hidden folders and take hidden files "
            "(names starting with a dot: .thumbnails/, macOS ._ files).",
            panel=INPUTS,
        ),
    ] = False,
    boxes: Annotated[
        str | None,
        option(
            help="Person boxes (COCO annotations or results JSON, JSONL or CSV path,x,y,w,h"
            "[,score]): one row per box, cropped as upstream's pose pipeline does; INPUT is "
            "the folder the box file's image names are relative to.",
            panel=INPUTS,
        ),
    ] = None,
    box_padding: Annotated[
        float | None,
        option(
            help="With --boxes: crop size as a factor of the box "
            f"(default {DEFAULTS.box_padding:g}).",
            panel=INPUTS,
        ),
    ] = None,
    min_score: Annotated[
        float | None,
        option(
            help="With --boxes: leave out boxes scored below this (unscored kept).", panel=INPUTS
        ),
    ] = None,
    include_crowd: Annotated[
        bool,
        flag_option(
            "--include-crowd", help="With --boxes: keep COCO crowd boxes (iscrowd 1).", panel=INPUTS
        ),
    ] = False,
    fps: Annotated[
        float | None,
        option(
            "--fps",
            help="Videos: frames kept per second, by presentation time "
            f"(default {DEFAULTS.video_fps:g}, or OUT's on a resume).",
            panel=INPUTS,
        ),
    ] = None,
    every_frame: Annotated[
        bool,
        flag_option(
            "--every-frame", help="Videos: keep every frame (instead of --fps).", panel=INPUTS
        ),
    ] = False,
    image_column: Annotated[
        str | None,
        option(
            help="Parquet / Arrow inputs: the image column, when several hold images "
            "(default: the binary column, or struct with a binary `bytes` field).",
            panel=INPUTS,
        ),
    ] = None,
    key_column: Annotated[
        str | None,
        option(
            help="Parquet / Arrow inputs: key rows by this column's values (unique ids) "
            "instead of FILE#row=N.",
            panel=INPUTS,
        ),
    ] = None,
    arch: in_panel(ArchOption, MODEL) = None,
    checkpoint: in_panel(CheckpointOption, MODEL) = None,
    size: in_panel(SizeOption, MODEL) = None,
    resize: Annotated[
        choices.ResizeMode | None,
        choice_option(
            choices.ResizeMode,
            "--resize",
            "How an image is brought to the input size (letterbox records content_box)",
            default=DEFAULTS.resize,
            panel=MODEL,
        ),
    ] = None,
    jpeg_draft: Annotated[
        bool | None,
        flag_option(
            "--jpeg-draft/--no-jpeg-draft",
            help="Decode large JPEGs at a reduced scale (at least twice the input size) "
            "before the resize: faster, slightly different pixels (docs/performance.md); "
            f"{'on' if DEFAULTS.jpeg_draft else 'off'} by default.",
            panel=MODEL,
        ),
    ] = None,
    layers: Annotated[
        str | None,
        option(
            help="Block indices to keep, e.g. -1 (the last) or 8,17 (default "
            f"{','.join(map(str, DEFAULTS.layers))}).",
            panel=KEEP,
        ),
    ] = None,
    tokens: Annotated[
        choices.TokenMode | None,
        choice_option(
            choices.TokenMode, "--tokens", "Tokens a row keeps", default=DEFAULTS.tokens, panel=KEEP
        ),
    ] = None,
    project: Annotated[
        Path | None,
        option(help="A `sapiens2 pca` file: store (x - mean) @ components.T, k wide.", panel=KEEP),
    ] = None,
    layout: Annotated[
        choices.Layout | None,
        choice_option(
            choices.Layout, "--layout", "Row layout", default=DEFAULTS.layout, panel=KEEP
        ),
    ] = None,
    dtype: DtypeOption = None,
    pool: PoolOption = None,
    output: Annotated[
        str,
        option(
            "--output",
            "-o",
            help="OUT: a .h5/.hdf5 file or a folder of .npy shards (local, or a URL prefix).",
            panel=OUTPUT,
        ),
    ] = ...,
    output_format: Annotated[
        choices.OutputFormat | None,
        choice_option(choices.OutputFormat, "--format", "Default: from OUT's name", panel=OUTPUT),
    ] = None,
    compression: Annotated[
        choices.Compression | None,
        choice_option(
            choices.Compression, "--compression", "HDF5 only, lossless, slower", panel=OUTPUT
        ),
    ] = None,
    rows_per_shard: Annotated[
        int | None,
        option(help="npy only: rows per shard (default: about 256 MiB of features).", panel=OUTPUT),
    ] = None,
    batch_size: in_panel(BatchSizeOption, RUNNING) = str(DEFAULT_BATCH_SIZE),
    workers: Annotated[
        int | None,
        option(
            help="Decode processes; 0 decodes in the main process (default: 1 on CPU, "
            "where the forward uses every core; all cores but two with a GPU).",
            panel=RUNNING,
        ),
    ] = None,
    device: in_panel(DeviceOption, RUNNING) = "auto",
    precision: in_panel(PrecisionOption, RUNNING) = choices.Precision.AUTO,
    weights_dtype: Annotated[
        choices.Precision,
        choice_option(
            choices.Precision,
            "--weights-dtype",
            "The dtype the weights are loaded in; auto is bf16 under bf16 precision, else "
            "fp32 (fp32 keeps them float32 under autocast)",
            default=choices.Precision.AUTO,
            panel=RUNNING,
        ),
    ] = choices.Precision.AUTO,
    compile: Annotated[
        bool,
        flag_option(
            "--compile",
            help="torch.compile the forward (compile time shown apart; slow start).",
            panel=RUNNING,
        ),
    ] = False,
    compile_mode: Annotated[
        choices.CompileMode | None,
        choice_option(
            choices.CompileMode,
            "--compile-mode",
            "With --compile",
            default=choices.CompileMode.DEFAULT,
            panel=RUNNING,
        ),
    ] = None,
    profile: Annotated[
        bool,
        flag_option(
            "--profile", help="Time each stage and show where the time went.", panel=RUNNING
        ),
    ] = False,
    overwrite: Annotated[
        bool,
        flag_option(
            "--overwrite/--no-overwrite",
            help="Replace OUT (only ever a sapiens2 output) instead of resuming it.",
            panel=OUTPUT,
        ),
    ] = False,
    shard: Annotated[
        str | None,
        option(
            help="I/N: write only part I (from 0) of N, beside OUT, for job arrays; join the "
            "parts with `sapiens2 merge` (docs/scaling.md).",
            panel=OUTPUT,
        ),
    ] = None,
    merge: Annotated[
        choices.MergeMode,
        choice_option(
            choices.MergeMode,
            "--merge",
            "Under torchrun, how rank 0 joins the ranks' parts into OUT",
            default=choices.MergeMode.VIRTUAL,
            panel=OUTPUT,
        ),
    ] = choices.MergeMode.VIRTUAL,
    retry_failed: Annotated[
        bool,
        flag_option(
            "--retry-failed/--skip-failed",
            help="When resuming, try inputs that failed before again (default) or skip them.",
            panel=OUTPUT,
        ),
    ] = True,
    strict: Annotated[
        bool,
        flag_option(
            "--strict",
            help="Exit with code 3 when any input failed (the run still goes to the end).",
            panel=RUNNING,
        ),
    ] = False,
    as_json: in_panel(JsonOption, RUNNING) = False,
    quiet: in_panel(QuietOption, RUNNING) = False,
) -> None:
    """Extract features of every input into OUT; rerun the same command to resume.

    Settings left out (--size, --resize, --layers, --tokens, --layout,
    --dtype, --pool, --precision, --arch, --fps/--every-frame) are taken from OUT
    when it exists, so a resume needs only the inputs and -o.
    """
    flags = dict(locals())  # every parameter, by name
    from sapiens2_cli.config.options import ExtractOptions
    from sapiens2_cli.scaleout.launch import extract  # no torch yet: see engine/job.py

    options = ExtractOptions(**_option_keywords(flags))
    try:
        summary = extract(inputs or [], output, options, progress=not quiet)
    except KeyboardInterrupt as stop:
        from sapiens2_cli.engine.runner import Interrupted  # the loop's: loaded by now

        if not isinstance(stop, Interrupted):
            raise
        _report(stop.summary, as_json, quiet)
        typer.echo(
            f"interrupted: {stop.summary.rows} rows are safe in {stop.summary.output}; run "
            "the same command again to resume",
            err=True,
        )
        raise typer.Exit(130) from None
    if summary is None:  # a torchrun rank other than 0: rank 0 reports for all
        return
    _report(summary, as_json, quiet)
    if summary.next_step and not quiet:
        typer.echo(summary.next_step, err=True)
    if strict and summary.failed_total:
        raise typer.Exit(3)


#: Parameters of the command that are not options of the job.
_NOT_OPTIONS = ("inputs", "output", "strict", "as_json", "quiet")


def _option_keywords(flags: dict) -> dict:
    """The command's parameters as ExtractOptions' keywords: each flag's field has the
    flag's name (docs/api.md), but for --format, which is `output_format` here."""
    keywords = {name: value for name, value in flags.items() if name not in _NOT_OPTIONS}
    keywords["format"] = keywords.pop("output_format")
    keywords["files_from"] = tuple(keywords["files_from"] or ())
    keywords["dtype"] = given_once(keywords["dtype"], "--dtype")
    return keywords


def _report(summary, as_json: bool, quiet: bool) -> None:
    if not quiet:
        typer.echo(summary.describe(), err=True)
    if as_json:
        typer.echo(json.dumps(summary.to_json()))
