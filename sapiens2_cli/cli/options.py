"""Option types shared by the commands, so `--arch`, `--device`, `--json` read the same."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

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
