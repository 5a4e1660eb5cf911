"""Option types shared by the commands, so `--arch`, `--device`, `--json` read the same."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from sapiens2_cli.errors import Sapiens2Error

ArchOption = Annotated[
    str,
    typer.Option(
        "--arch", "-a", help="Model size: 0.1b, 0.4b, 0.8b, 1b, 1b-4k or 5b (`sapiens2 archs`)."
    ),
]
CheckpointOption = Annotated[
    Path | None,
    typer.Option(
        "--checkpoint",
        "-c",
        help="A local .safetensors checkpoint (pretrain or task); its arch is inferred.",
    ),
]
DeviceOption = Annotated[
    str, typer.Option("--device", help="auto, cpu, cuda or cuda:N (auto: a GPU if there is one).")
]
PrecisionOption = Annotated[
    str,
    typer.Option(
        "--precision",
        help="auto, bf16, fp16 or fp32 (auto: bf16 autocast on GPUs that support it, "
        "fp16 on older GPUs; on CPU bf16 with native bf16 (AMX, AVX-512 BF16), else fp32).",
    ),
]
SizeOption = Annotated[
    str | None,
    typer.Option(
        "--size", help="Input size HxW, multiples of 16 (default: the arch's training size)."
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print one JSON object on stdout (logs stay on stderr).")
]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or summary.")]


def parse_size(text: str) -> tuple[int, int]:
    """'1024x768' -> (1024, 768); checks the form only (the model checks the multiple)."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX,]\s*(\d+)\s*", text)
    if not match:
        raise Sapiens2Error(f"--size {text!r} is not HxW: write it like 1024x768")
    return int(match[1]), int(match[2])


def parse_batch_size(text: str) -> int | None:
    """A positive count, or None for auto (the largest that fits in GPU memory)."""
    if text.strip().lower() == "auto":
        return None
    if not text.strip().isdigit():
        raise Sapiens2Error(f"--batch-size {text!r} is neither a positive number nor auto")
    if int(text) < 1:
        raise Sapiens2Error(f"--batch-size must be at least 1 (or auto), not {int(text)}")
    return int(text)
