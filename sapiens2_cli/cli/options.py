"""Option types shared by the commands, so `--arch`, `--device`, `--json` read the same,
and the two ways options are declared: choices parsed into their `config/choices.py` enum, and
flags shown without a value type. Extract's many flags are grouped in the panels below."""

from __future__ import annotations

import copy
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer

from sapiens2_cli.config.choices import Choice, Precision, StorageDtype
from sapiens2_cli.config.options import DEFAULTS  # light: no torch
from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.model.config import ARCHS

#: The help panels of `extract`.
INPUTS, MODEL, KEEP, OUTPUT, RUNNING = "Inputs", "Model", "What to keep", "Output", "Running"


def choice_option(
    choice: type[Choice],
    flag: str,
    lead: str,
    *,
    default: Choice | None = None,
    panel: str | None = None,
) -> Any:
    """`flag` parsed into a member of `choice` (Choice.parse's one error wording); its
    help is `lead` and the choices with their meanings, `default` marked (the value type
    column lists the choices)."""
    description = choice.describe(default)
    separator = " " if description.startswith("(") else ": "
    help = f"{lead}{separator}{description}." if description else f"{lead}."
    return option(flag, help=help, panel=panel, parser=partial(choice.parse, flag=flag))


def option(*names: str, help: str, panel: str | None = None, **kw: Any) -> Any:
    """An option in help `panel` whose help text says its default, if it has one."""
    return typer.Option(*names, help=help, show_default=False, rich_help_panel=panel, **kw)


def flag_option(*names: str, help: str, panel: str | None = None) -> Any:
    """An on/off flag: no value, so no value type in the help."""
    return option(*names, help=help, panel=panel, metavar="")


def in_panel(shared: Any, panel: str) -> Any:
    """A shared option below shown in help `panel` (extract groups its many flags)."""
    info = copy.copy(shared.__metadata__[0])
    info.rich_help_panel = panel
    return Annotated[shared.__origin__, info]


ArchOption = Annotated[
    str | None,
    typer.Option(
        "--arch",
        "-a",
        help=f"Model size: {', '.join(ARCHS)} (`sapiens2 archs`).",
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
SizeOption = Annotated[
    str | None,
    typer.Option(
        "--size",
        help="Input size HxW, multiples of 16 (default: the arch's training size).",
    ),
]
DeviceOption = Annotated[
    str,
    typer.Option(
        "--device",
        help="auto, cpu, cuda or cuda:N (auto: a GPU if there is one).",
    ),
]
PrecisionOption = Annotated[
    Precision,
    choice_option(
        Precision,
        "--precision",
        "Compute dtype; auto is bf16 autocast on GPUs that support it, fp16 on older GPUs, "
        "and on CPU bf16 with native bf16 (AMX, AVX-512 BF16), else fp32",
        default=Precision.AUTO,
    ),
]
BatchSizeOption = Annotated[
    str,
    typer.Option(
        help="Images per forward pass, or auto: the largest of 256, 128, ... that fits "
        "in GPU memory (1 on CPU).",
    ),
]
JsonOption = Annotated[
    bool,
    flag_option("--json", help="Print one JSON object on stdout (logs stay on stderr)."),
]
QuietOption = Annotated[bool, flag_option("--quiet", "-q", help="No progress bar or summary.")]
DtypeOption = Annotated[
    list[StorageDtype] | None,
    choice_option(
        StorageDtype,
        "--dtype",
        "Storage dtype (once)",
        default=DEFAULTS.dtype,
        panel=KEEP,
    ),
]
PoolOption = Annotated[
    int | None,
    option(
        "--pool",
        metavar="K",
        help="Keep the mean of each KxK block of patch tokens (K divides the patch grid; "
        "--tokens patch or all): K^2 times fewer patch rows (docs/format.md#reductions).",
        panel=KEEP,
    ),
]


def given_once(values: list[Choice] | None, flag: str) -> Choice | None:
    """A choice option that must not be given twice (`--dtype int8 --dtype float16` would
    silently keep the last): the one value, None if not given."""
    if values and len(set(values)) > 1:
        given = " and ".join(f"{flag} {v}" for v in values)
        raise Sapiens2Error(f"{given} both choose one setting: give {flag} once")
    return values[0] if values else None
