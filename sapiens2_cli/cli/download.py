"""`sapiens2 download`: fetch a published checkpoint into the Hugging Face cache."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sapiens2_cli.cli.options import ArchOption


def download_command(
    arch: ArchOption = "1b",
    task: Annotated[
        str | None,
        typer.Option(
            help="A task checkpoint (pose, seg, normal or pointmap) instead of the pretrained "
            "backbone."
        ),
    ] = None,
    revision: Annotated[
        str | None, typer.Option(help="Branch, tag or commit on the hub (default: main).")
    ] = None,
    local_dir: Annotated[
        Path | None,
        typer.Option(help="Download into this folder instead of the Hugging Face cache."),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(help="Hugging Face token (default: HF_TOKEN or `hf auth login`)."),
    ] = None,
) -> None:
    """Download a published checkpoint and print its local path alone on stdout.

    Later calls use the Hugging Face cache; the file's header is checked to hold the arch
    asked for.
    """
    from sapiens2_cli.model import inspect_checkpoint
    from sapiens2_cli.weights.hub import resolve_checkpoint

    path = resolve_checkpoint(arch, task, revision=revision, token=token, local_dir=local_dir)
    inspect_checkpoint(path, arch)
    typer.echo(str(path))
