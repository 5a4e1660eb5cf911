"""Choosing the device and the compute precision from `--device` and `--precision`."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from sapiens2_cli.config.choices import Precision
from sapiens2_cli.errors import Sapiens2Error


def resolve_device(spec: str = "auto") -> torch.device:
    """'auto' -> the first CUDA GPU if there is one, else the CPU; checks that it exists."""
    spec = spec.strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise Sapiens2Error(f"unknown device '{spec}': use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise Sapiens2Error(f"--device {spec} asked for, but no CUDA GPU is visible: use cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise Sapiens2Error(
                f"--device {spec}: only {torch.cuda.device_count()} CUDA GPU(s) are visible"
            )
    elif device.type != "cpu":
        raise Sapiens2Error(f"unsupported device '{spec}': use auto, cpu, cuda or cuda:N")
    return device


#: /proc/cpuinfo flags of x86 CPUs with bf16 dot-product instructions, best first. Without
#: them bf16 matrix products are emulated through float32 and may run slower than fp32.
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_info(field: str, cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """The first CPU's `field` ("flags", "model name"); None where /proc/cpuinfo is missing
    (macOS, Windows) or lacks it."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == field:
            return value.strip()
    return None


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The first CPU's feature flags; empty where /proc/cpuinfo is missing (macOS, Windows)."""
    return set((cpu_info("flags", cpuinfo) or "").split())


def cpu_bf16_feature(flags: set[str] | None = None) -> str | None:
    """The CPU flag that gives native bf16 (what `--precision auto` on CPU went by), or None."""
    flags = cpu_flags() if flags is None else flags
    return next((f for f in CPU_BF16_FLAGS if f in flags), None)


def resolve_precision(precision: Precision, device: torch.device) -> Precision:
    """The compute precision: 'auto' is bf16 on GPUs that support it, fp16 on older GPUs,
    and on CPUs bf16 where they have native bf16 instructions (`cpu_bf16_feature`), else
    fp32."""
    if precision == Precision.AUTO:
        if device.type == "cpu":
            return Precision.BF16 if cpu_bf16_feature() else Precision.FP32
        return Precision.BF16 if torch.cuda.is_bf16_supported() else Precision.FP16
    if precision == Precision.FP16 and device.type == "cpu":
        raise Sapiens2Error("--precision fp16 is not supported on the CPU: use bf16 or fp32")
    return precision


def resolve_weights_dtype(spec: Precision, precision: Precision) -> Precision:
    """The dtype the weights are loaded in, for the resolved compute `precision`.

    'auto' is bf16 when computing in bf16: half the memory of float32 weights and no
    per-step cast under autocast, with features within the tolerance held for it (cosine
    >= 0.999 per image against float32 weights, tests/engine/test_forward.py). Otherwise float32
    (fp16 weights would also put the residual stream in fp16, where it can overflow).
    An explicit dtype must be float32 or the compute dtype.
    """
    if spec == Precision.AUTO:
        return Precision.BF16 if precision == Precision.BF16 else Precision.FP32
    if spec not in (Precision.FP32, precision):
        raise Sapiens2Error(
            f"--weights-dtype {spec} with --precision {precision}: weights are "
            "float32 or in the compute precision; use --weights-dtype fp32 or auto"
        )
    return spec


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """Mixed precision for bf16/fp16 (weights stay as loaded); nothing for fp32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
