"""Choosing the device and the compute precision from `--device` and `--precision`."""

from __future__ import annotations

import contextlib
from typing import Literal

import torch

from sapiens2_cli.errors import Sapiens2Error

Precision = Literal["auto", "bf16", "fp16", "fp32"]
PRECISION_DTYPES: dict[str, torch.dtype] = {
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "fp32": torch.float32,
}


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


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """Compute dtype: 'auto' is bf16 on GPUs that support it, fp16 on older GPUs, fp32 on CPU."""
    precision = precision.strip().lower()
    if precision == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision not in PRECISION_DTYPES:
        raise Sapiens2Error(f"unknown precision '{precision}': use auto, bf16, fp16 or fp32")
    return PRECISION_DTYPES[precision]


def precision_name(dtype: torch.dtype) -> str:
    return next(name for name, d in PRECISION_DTYPES.items() if d == dtype)


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """Mixed precision for bf16/fp16 (weights stay as loaded); nothing for fp32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
