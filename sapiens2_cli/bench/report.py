"""What `sapiens2 bench` measures, as one report: FLOPs counted, forward passes timed,
model FLOP utilisation, and optionally the extract pipeline's speed beside the model's."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from sapiens2_cli.bench.flops import count_cost
from sapiens2_cli.bench.peaks import peak_tflops
from sapiens2_cli.bench.timing import Timing, environment, time_forward
from sapiens2_cli.config.choices import Precision
from sapiens2_cli.config.options import ExtractOptions
from sapiens2_cli.model import build_backbone
from sapiens2_cli.model.config import Sapiens2Config
from sapiens2_cli.text import plural

FLOPS_CONVENTION = (
    "torch.utils.flop_counter.FlopCounterMode on the meta device: 2 FLOPs per multiply-add "
    "in convolutions and matrix products, attention included"
)


@dataclass(frozen=True)
class BenchPlan:
    """One `sapiens2 bench` run, its flags checked and its device and precision resolved."""

    config: Sapiens2Config
    size: tuple[int, int]
    device: torch.device
    precision: Precision  # resolved: never AUTO
    batch_size: int | None  # None: what extract's forward stage fits
    steps: int
    warmup: int
    compile: bool
    count_only: bool
    pipeline: Path | None  # a folder of images to run the extract pipeline on
    workers: int | None
    profile: bool


def bench_report(plan: BenchPlan, note: Callable[[str], None]) -> dict:
    """Count, and unless `count_only` time, `plan`; `note` gets progress lines."""
    env = environment(plan.device) | {
        "precision": plan.precision.value,
        "batch_size": None,
        "image_size": list(plan.size),
        "compile": plan.compile,
        # --pipeline times both runs as extract computes: float32 weights under autocast
        "weights_dtype": Precision.FP32.value if plan.pipeline else plan.precision.value,
    }
    cost = count_cost(plan.config, *plan.size)
    report = cost.as_dict() | {"flops_convention": FLOPS_CONVENTION}
    if not plan.count_only:
        timing = _time_model(plan, note)
        env["batch_size"] = timing.batch_size
        report |= timing.as_dict()
        report["achieved_tflops"] = cost.flops_per_image * timing.images_per_s / 1e12
        peak = peak_tflops(env["device_name"], plan.precision)
        if peak is not None:
            report["peak_tflops"] = peak
            report["mfu"] = report["achieved_tflops"] / peak
        if plan.pipeline is not None:
            report["pipeline"] = _time_pipeline(plan, timing, note)
    report["environment"] = env
    return report


def _time_model(plan: BenchPlan, note: Callable[[str], None]) -> Timing:
    """Build random weights on the device and time them: in the chosen precision, or as
    extract runs (float32 weights, autocast to the precision) with --pipeline."""
    from sapiens2_cli.engine.forward import DeviceModel

    dtype = plan.precision.torch
    weights = torch.float32 if plan.pipeline else dtype
    model = build_backbone(plan.config, device=plan.device, dtype=weights)
    batch = plan.batch_size
    if batch is None:  # what extract's forward stage fits (engine/forward.py)
        options = ExtractOptions(precision=plan.precision, batch_size=1)  # extract's defaults
        stage = DeviceModel(model, options, plan.device, plan.config.grid_size(*plan.size))
        batch = stage.fit_batch(plan.size)
    height, width = plan.size
    note(
        f"timing {plan.config.name} at {height}x{width}, batch {batch}, {plan.precision} "
        f"on {plan.device}: {plan.warmup} warmup + {plural(plan.steps, 'timed step')}"
    )
    autocast_to = dtype if plan.pipeline else None
    return time_forward(
        model,
        batch,
        plan.size,
        plan.device,
        weights,
        plan.steps,
        plan.warmup,
        plan.compile,
        autocast_to,
    )


def _time_pipeline(plan: BenchPlan, timing: Timing, note: Callable[[str], None]) -> dict:
    """The extract pipeline's speed on `plan.pipeline`, and its ratio to the bare model's."""
    from sapiens2_cli.bench.pipeline import time_pipeline
    from sapiens2_cli.engine.profile import describe as describe_profile

    note(f"running the extract pipeline on {plan.pipeline}")
    run = time_pipeline(
        plan.pipeline,
        plan.config,
        plan.size,
        plan.device,
        plan.precision.torch,
        timing.batch_size,
        plan.workers,
        plan.profile,
    )
    if run.profile is not None:
        note(describe_profile(run.profile))
    return run.as_dict() | {
        "ratio": run.images_per_s / timing.images_per_s,
        "steady_ratio": run.steady_images_per_s / timing.images_per_s,
    }
