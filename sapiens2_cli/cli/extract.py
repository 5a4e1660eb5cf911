"""`sapiens2 extract INPUT... -o OUT`: images in, features out, resumable, nothing lost."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Annotated, get_args

import typer

from sapiens2_cli.cli.options import (
    ArchOption,
    CheckpointOption,
    DeviceOption,
    JsonOption,
    PrecisionOption,
    QuietOption,
    SizeOption,
    parse_batch_size,
    parse_size,
)
from sapiens2_cli.device import resolve_device, resolve_precision, resolve_weights_dtype
from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.pipeline.decode import ResizeMode
from sapiens2_cli.pipeline.distributed import RankGroup, Ranks
from sapiens2_cli.pipeline.extract import (
    CompileMode,
    FeatureSpec,
    Interrupted,
    Layout,
    OutputSpec,
    RunOptions,
    StorageDtype,
    TokenMode,
    prepare,
)
from sapiens2_cli.pipeline.parts import PartJob, parse_shard
from sapiens2_cli.pipeline.progress import Summary
from sapiens2_cli.pipeline.sources import list_images
from sapiens2_cli.pipeline.weights import Weights, checkpoint_sha256, resolve_weights
from sapiens2_cli.writers import check_output_path, infer_format
from sapiens2_cli.writers.merge import merge_mode

COMPRESSIONS = ("gzip", "lzf")


def _choice(flag: str, value: str, allowed: tuple[str, ...]) -> str:
    value = value.strip().lower()
    if value not in allowed:
        raise Sapiens2Error(f"unknown {flag} {value!r}: use {', '.join(allowed)}")
    return value


def parse_layers(text: str) -> tuple[int, ...]:
    """'-1' or '8,17' or '8 17' -> block indices (checked against the model later)."""
    parts = [p for p in re.split(r"[,\s]+", text.strip()) if p]
    try:
        return tuple(int(p) for p in parts)
    except ValueError:
        raise Sapiens2Error(
            f"--layers {text!r} is not a list of block indices: write it like -1 or 8,17"
        ) from None


def _positive(flag: str, value: int, minimum: int) -> int:
    if value < minimum:
        raise Sapiens2Error(f"{flag} must be at least {minimum}, not {value}")
    return value


def extract_command(
    inputs: Annotated[
        list[str] | None,
        typer.Argument(
            help="Image files, folders (walked recursively) or - to read paths from stdin.",
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
    arch: Annotated[str | None, ArchOption.__metadata__[0]] = None,
    checkpoint: CheckpointOption = None,
    size: SizeOption = None,
    resize: Annotated[
        str,
        typer.Option(
            help="stretch (upstream's, ignores aspect) or letterbox (keeps it, pads with "
            "the mean colour and records content_box)."
        ),
    ] = "stretch",
    layers: Annotated[
        str, typer.Option(help="Block indices to keep, e.g. -1 (the last) or 8,17.")
    ] = "-1",
    tokens: Annotated[
        str,
        typer.Option(
            help="patch (h*w patch tokens), all (9 prefix + patches), cls, or mean (of patches)."
        ),
    ] = "patch",
    layout: Annotated[
        str, typer.Option(help="tokens: (T, D) per layer; map: (D, h, w), patch tokens only.")
    ] = "tokens",
    dtype: Annotated[
        str, typer.Option(help="Storage dtype: float16 (range-checked) or float32.")
    ] = "float16",
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
    ] = "8",
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
        str,
        typer.Option(
            help="With --compile: default, reduce-overhead (adds CUDA graphs) or max-autotune."
        ),
    ] = "default",
    profile: Annotated[
        bool,
        typer.Option("--profile", help="Time each stage and show where the time went."),
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace OUT instead of resuming it.")] = False,
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
            help="When resuming, try images that failed before again (default) or skip them.",
        ),
    ] = True,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Extract features of every image into OUT; rerun the same command to resume."""
    fmt = infer_format(output, output_format and _choice("--format", output_format, ("h5", "npy")))
    spec = FeatureSpec(
        size=parse_size(size) if size else None,
        resize=_choice("--resize", resize, get_args(ResizeMode)),  # type: ignore[arg-type]
        layers=parse_layers(layers),
        tokens=_choice("--tokens", tokens, get_args(TokenMode)),  # type: ignore[arg-type]
        layout=_choice("--layout", layout, get_args(Layout)),  # type: ignore[arg-type]
        dtype=_choice("--dtype", dtype, get_args(StorageDtype)),  # type: ignore[arg-type]
    )
    if compression is not None:
        compression = _choice("--compression", compression, COMPRESSIONS)
        if fmt != "h5":
            raise Sapiens2Error("--compression applies to HDF5 output only: drop it or use -o x.h5")
    if rows_per_shard is not None:
        _positive("--rows-per-shard", rows_per_shard, 1)
    ranks = Ranks.from_env()
    run_device = ranks.pin(resolve_device(device))
    compute = resolve_precision(precision, run_device)
    compile_as = _choice("--compile-mode", compile_mode, get_args(CompileMode)) if compile else None
    run = RunOptions(
        device=run_device,
        precision=compute,
        batch_size=parse_batch_size(batch_size),
        workers=None if workers is None else _positive("--workers", workers, 0),
        weights_dtype=resolve_weights_dtype(weights_dtype, compute),
        compile=compile_as,  # type: ignore[arg-type]
        profile=profile,
    )
    out = OutputSpec(output, fmt, overwrite, compression, rows_per_shard, retry_failed)
    with RankGroup(ranks, run_device) as group:
        job = PartJob.plan(group, out, shard and parse_shard(shard), merge_mode(merge))
        images = group.first(lambda: list_images(inputs or [], files_from or [], sys.stdin))
        check_output_path(job.output.path, fmt, overwrite)
        weights = group.first(lambda: _resolve_and_hash(arch, checkpoint))
        extraction = prepare(job.take(images), weights, spec, job.output, run)
        bar = group.progress(len(extraction.pending), not quiet)
        try:
            summary = extraction.run(bar=bar)
        except Interrupted as stop:
            _report(stop.summary, as_json, quiet)
            typer.echo(
                f"interrupted: {stop.summary.rows} rows are safe in {stop.summary.output}; run "
                "the same command again to resume",
                err=True,
            )
            raise typer.Exit(130) from None
        summary = job.finish(summary)
    if summary is not None:
        _report(summary, as_json, quiet)
        if job.next_step() and not quiet:
            typer.echo(job.next_step(), err=True)


def _resolve_and_hash(arch: str | None, checkpoint: Path | None) -> Weights:
    """Under torchrun, rank 0 alone downloads and hashes the weights; the other ranks on its
    machine (or sharing its cache folder) then read the sha256 from the hash cache instead
    of hashing the same file at the same time."""
    weights = resolve_weights(arch, checkpoint)
    checkpoint_sha256(weights.path)
    return weights


def _report(summary: Summary, as_json: bool, quiet: bool) -> None:
    if not quiet:
        typer.echo(summary.describe(), err=True)
    if as_json:
        typer.echo(json.dumps(summary.to_json()))
