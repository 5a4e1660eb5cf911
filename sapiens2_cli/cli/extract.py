"""`sapiens2 extract INPUT... -o OUT`: images in, features out, resumable, nothing lost."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from sapiens2_cli.cli.options import (
    ArchOption,
    CheckpointOption,
    DeviceOption,
    JsonOption,
    PrecisionOption,
    QuietOption,
    SizeOption,
)
from sapiens2_cli.pipeline.options import DEFAULT_BATCH_SIZE, DEFAULTS  # light: no torch


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
    output: Annotated[
        Path,
        typer.Option("--output", "-o", help="OUT: a .h5/.hdf5 file, or a folder of .npy shards."),
    ] = ...,
    files_from: Annotated[
        list[Path] | None,
        typer.Option("--files-from", help="A file listing image paths, one a line."),
    ] = None,
    null: Annotated[
        bool,
        typer.Option(
            "--null",
            "-0",
            help="Paths on stdin and in --files-from end with NUL "
            "bytes (find -print0), not newlines.",
        ),
    ] = False,
    hidden: Annotated[
        bool,
        typer.Option(
            "--hidden",
            help="Also walk hidden folders and take hidden files "
            "(names starting with a dot: .thumbnails/, macOS ._ files).",
        ),
    ] = False,
    boxes: Annotated[
        Path | None,
        typer.Option(
            help="Person boxes (COCO annotations or results JSON, JSONL or CSV path,x,y,w,h"
            "[,score]): one row per box, cropped as upstream's pose pipeline does; INPUT is "
            "the folder the box file's image names are relative to.",
            show_default=False,
        ),
    ] = None,
    box_padding: Annotated[
        float | None,
        typer.Option(
            help="With --boxes: crop size as a factor of the box "
            f"(default {DEFAULTS.box_padding:g}).",
            show_default=False,
        ),
    ] = None,
    min_score: Annotated[
        float | None,
        typer.Option(
            help="With --boxes: leave out boxes scored below this (unscored kept).",
            show_default=False,
        ),
    ] = None,
    include_crowd: Annotated[
        bool,
        typer.Option("--include-crowd", help="With --boxes: keep COCO crowd boxes (iscrowd 1)."),
    ] = False,
    fps: Annotated[
        float | None,
        typer.Option(
            "--fps",
            help="Videos: frames kept per second, by presentation time "
            f"(default {DEFAULTS.video_fps:g}, or OUT's on a resume).",
            show_default=False,
        ),
    ] = None,
    every_frame: Annotated[
        bool,
        typer.Option("--every-frame", help="Videos: keep every frame (instead of --fps)."),
    ] = False,
    image_column: Annotated[
        str | None,
        typer.Option(
            help="Parquet / Arrow inputs: the image column, when several hold images (default: "
            "the one binary column or struct with a binary `bytes` field).",
            show_default=False,
        ),
    ] = None,
    key_column: Annotated[
        str | None,
        typer.Option(
            help="Parquet / Arrow inputs: key rows by this column's values (unique ids) "
            "instead of FILE#row=N.",
            show_default=False,
        ),
    ] = None,
    arch: Annotated[str | None, ArchOption.__metadata__[0]] = None,
    checkpoint: CheckpointOption = None,
    size: SizeOption = None,
    resize: Annotated[
        str | None,
        typer.Option(
            help="stretch (upstream's, ignores aspect; the default) or letterbox (keeps it, "
            "pads with the mean colour and records content_box).",
            show_default=False,
        ),
    ] = None,
    jpeg_draft: Annotated[
        bool | None,
        typer.Option(
            "--jpeg-draft/--no-jpeg-draft",
            help="Decode large JPEGs at a reduced scale (at least twice the input size) "
            "before the resize: faster, slightly different pixels (docs/performance.md). "
            "Off by default.",
            show_default=False,
        ),
    ] = None,
    layers: Annotated[
        str | None,
        typer.Option(
            help="Block indices to keep, e.g. -1 (the last) or 8,17 (default "
            f"{','.join(map(str, DEFAULTS.layers))}).",
            show_default=False,
        ),
    ] = None,
    tokens: Annotated[
        str | None,
        typer.Option(
            help="patch (h*w patch tokens; the default), all (9 prefix + patches), cls, or "
            "mean (of patches).",
            show_default=False,
        ),
    ] = None,
    layout: Annotated[
        str | None,
        typer.Option(
            help="tokens (the default): (T, D) per layer; map: (D, h, w), patch tokens only.",
            show_default=False,
        ),
    ] = None,
    dtype: Annotated[
        str | None,
        typer.Option(
            help="Storage dtype: float16 (range-checked; the default) or float32.",
            show_default=False,
        ),
    ] = None,
    output_format: Annotated[
        str | None,
        typer.Option("--format", help="h5 or npy (default: from OUT's name)."),
    ] = None,
    compression: Annotated[
        str | None, typer.Option(help="HDF5 only: gzip or lzf (lossless, slower).")
    ] = None,
    rows_per_shard: Annotated[
        int | None,
        typer.Option(help="npy only: rows per shard (default: about 256 MiB of features)."),
    ] = None,
    batch_size: Annotated[
        str,
        typer.Option(
            help="Images per forward pass, or auto: the largest of 256, 128, ... that fits "
            "in GPU memory (1 on CPU)."
        ),
    ] = str(DEFAULT_BATCH_SIZE),
    workers: Annotated[
        int | None,
        typer.Option(
            help="Decode processes; 0 decodes in the main process (default: 1 on CPU, "
            "where the forward uses every core; all cores but two with a GPU).",
            show_default=False,
        ),
    ] = None,
    device: DeviceOption = "auto",
    precision: PrecisionOption = "auto",
    weights_dtype: Annotated[
        str,
        typer.Option(
            help="auto, fp32, bf16 or fp16: the dtype the weights are loaded in (auto: bf16 "
            "under bf16 precision, else fp32; fp32 keeps them float32 under autocast)."
        ),
    ] = "auto",
    compile: Annotated[
        bool,
        typer.Option(
            "--compile", help="torch.compile the forward (compile time shown apart; slow start)."
        ),
    ] = False,
    compile_mode: Annotated[
        str | None,
        typer.Option(
            help="With --compile: default (the default), reduce-overhead (adds CUDA graphs) "
            "or max-autotune.",
            show_default=False,
        ),
    ] = None,
    profile: Annotated[
        bool,
        typer.Option("--profile", help="Time each stage and show where the time went."),
    ] = False,
    overwrite: Annotated[
        bool,
        typer.Option(help="Replace OUT (only ever a sapiens2 output) instead of resuming it."),
    ] = False,
    shard: Annotated[
        str | None,
        typer.Option(
            help="I/N: write only part I (from 0) of N, beside OUT, for job arrays; join the "
            "parts with `sapiens2 merge` (docs/scaling.md).",
            show_default=False,
        ),
    ] = None,
    merge: Annotated[
        str,
        typer.Option(
            help="Under torchrun, how rank 0 joins the ranks' parts into OUT: virtual (no "
            "copy of the features) or copy (one self-contained OUT).",
        ),
    ] = "virtual",
    retry_failed: Annotated[
        bool,
        typer.Option(
            "--retry-failed/--skip-failed",
            help="When resuming, try inputs that failed before again (default) or skip them.",
        ),
    ] = True,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict",
            help="Exit with code 3 when any input failed (the run still goes to the end).",
        ),
    ] = False,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Extract features of every input into OUT; rerun the same command to resume.

    Settings left out (--size, --resize, --layers, --tokens, --layout, --dtype,
    --precision, --arch, --fps/--every-frame) are taken from OUT when it exists, so a
    resume needs only the inputs and -o.
    """
    from sapiens2_cli.pipeline.job import ExtractOptions, extract  # no torch yet: see there

    options = ExtractOptions(
        arch=arch,
        checkpoint=checkpoint,
        size=size,
        resize=resize,
        layers=layers,
        tokens=tokens,
        layout=layout,
        dtype=dtype,
        jpeg_draft=jpeg_draft,
        format=output_format,
        compression=compression,
        rows_per_shard=rows_per_shard,
        overwrite=overwrite,
        retry_failed=retry_failed,
        device=device,
        precision=precision,
        weights_dtype=weights_dtype,
        batch_size=batch_size,
        workers=workers,
        compile=compile,
        compile_mode=compile_mode,
        profile=profile,
        shard=shard,
        merge=merge,
        files_from=tuple(files_from or ()),
        hidden=hidden,
        null=null,
        boxes=boxes,
        box_padding=box_padding,
        min_score=min_score,
        include_crowd=include_crowd,
        fps=fps,
        every_frame=every_frame,
        image_column=image_column,
        key_column=key_column,
    )
    try:
        summary = extract(inputs or [], output, options, progress=not quiet)
    except KeyboardInterrupt as stop:
        from sapiens2_cli.pipeline.runner import Interrupted  # the loop's: loaded by now

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


def _report(summary, as_json: bool, quiet: bool) -> None:
    if not quiet:
        typer.echo(summary.describe(), err=True)
    if as_json:
        typer.echo(json.dumps(summary.to_json()))
