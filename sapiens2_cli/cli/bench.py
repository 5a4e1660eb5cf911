"""`sapiens2 bench`: parameters, FLOPs and forward-pass speed of a backbone with random
weights (nothing to download)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from sapiens2_cli.cli.options import (
    ArchOption,
    BatchSizeOption,
    DeviceOption,
    JsonOption,
    PrecisionOption,
    SizeOption,
    flag_option,
)
from sapiens2_cli.config.choices import Precision
from sapiens2_cli.config.values import parse_batch_size, parse_size
from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.model.config import get_config
from sapiens2_cli.text import plural


def bench_command(
    arch: ArchOption = "1b",
    size: SizeOption = None,
    batch_size: BatchSizeOption = "auto",
    device: DeviceOption = "auto",
    precision: PrecisionOption = Precision.AUTO,
    compile: Annotated[
        bool, flag_option("--compile", help="Time under torch.compile (compile time apart).")
    ] = False,
    steps: Annotated[int, typer.Option(min=1, help="Timed forward passes.")] = 10,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed forward passes before timing.")] = 2,
    count_only: Annotated[
        bool, flag_option("--count-only", help="Only count parameters and FLOPs (no run).")
    ] = False,
    pipeline: Annotated[
        Path | None,
        typer.Option(
            help="Also run the extract pipeline on this folder of images and report its "
            "images/s beside the bare model's (weights float32 under autocast in both)."
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Decode processes for --pipeline (default: 1 on CPU, where the forward "
            "already uses every core; all cores but two on a GPU).",
            show_default=False,
            min=0,
        ),
    ] = None,
    profile: Annotated[
        bool,
        flag_option(
            "--profile", help="With --pipeline: time each stage of the extract run (on stderr)."
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Count parameters and FLOPs, and time forward passes of random weights.

    FLOPs are counted on the meta device (no memory); the timing reports images/s,
    ms per batch, peak memory and MFU, and with --pipeline the extract pipeline's
    images/s too.
    """
    config = get_config(arch)  # every flag is checked before any work or output
    height, width = parse_size(size) if size else config.image_size
    config.check_image_size(height, width)
    batch = None if count_only else parse_batch_size(batch_size)
    if pipeline is not None and not pipeline.is_dir():
        raise Sapiens2Error(f"--pipeline {pipeline} is not a folder of images")

    from sapiens2_cli.bench.report import BenchPlan, bench_report
    from sapiens2_cli.engine.device import resolve_device, resolve_precision

    target = resolve_device(device)
    plan = BenchPlan(
        config=config,
        size=(height, width),
        device=target,
        precision=resolve_precision(precision, target),
        batch_size=batch,
        steps=steps,
        warmup=warmup,
        compile=compile,
        count_only=count_only,
        pipeline=pipeline,
        workers=workers,
        profile=profile,
    )
    report = bench_report(plan, note=lambda line: typer.echo(line, err=True))
    if as_json:
        typer.echo(json.dumps(report))
    else:
        _print(report)


def _si(value: float, unit: str) -> str:
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M")):
        if abs(value) >= scale:
            return f"{value / scale:.3f} {prefix}{unit}"
    return f"{value:.3g} {unit}"


def _print(r: dict) -> None:
    env = r["environment"]
    breakdown = " · ".join(f"{k} {_si(v, '')}".rstrip() for k, v in r["flops_by_part"].items())
    lines = [
        f"arch {r['arch']} at {r['image_size'][0]}x{r['image_size'][1]} ({r['tokens']:,} tokens)",
        f"  parameters       {r['parameters']:,}",
        f"  FLOPs per image  {_si(r['flops_per_image'], 'FLOP')} ({breakdown})",
        "                   2 FLOPs per multiply-add, attention included (FlopCounterMode, meta)",
    ]
    if "images_per_s" in r:
        memory = r["peak_memory_bytes"] / 2**30
        mfu = f"{100 * r['mfu']:.1f} % of {r['peak_tflops']} TFLOP/s" if "mfu" in r else "n/a"
        lines += [
            f"  device           {env['device_name']} ({env['device']}), {env['precision']}, "
            f"batch {env['batch_size']}, torch {env['torch']}, {env['cpu_threads']} CPU threads",
            f"  ms per batch     median {r['median_ms']:.1f}, p90 {r['p90_ms']:.1f} "
            f"({plural(r['steps'], 'step')} after {r['warmup']} warmup)",
            f"  images/s         {r['images_per_s']:.2f}",
            f"  achieved         {_si(r['achieved_tflops'] * 1e12, 'FLOP/s')}",
            f"  MFU              {mfu}",
            f"  peak memory      {memory:.2f} GiB ({r['peak_memory_source']})",
        ]
        if r["compile_s"] is not None:
            lines.append(
                f"  compile          {r['compile_s']:.1f} s (first call, not in the timing)"
            )
    if "pipeline" in r:
        p = r["pipeline"]
        lines += [
            f"  extract pipeline {p['images']} images in {p['seconds']:.1f} s with "
            f"{p['workers']} decode workers: {p['images_per_s']:.2f} images/s, "
            f"{p['ratio']:.2f}x the bare model",
            f"                   without the {p['load_s']:.1f} s model load: "
            f"{p['steady_images_per_s']:.2f} images/s, {p['steady_ratio']:.2f}x",
        ]
    typer.echo("\n".join(lines))
