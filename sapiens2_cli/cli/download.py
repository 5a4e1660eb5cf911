"""`sapiens2 download`: fetch a published checkpoint, or any repository's Sapiens2 weights,
into the Hugging Face cache."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sapiens2_cli.cli.options import ArchOption
from sapiens2_cli.errors import Sapiens2Error


def download_command(
    arch: ArchOption = "1b",
    task: Annotated[
        str | None,
        typer.Option(
            help="A task checkpoint (pose, seg, normal, pointmap or matting) instead of the "
            "pretrained backbone."
        ),
    ] = None,
    repo: Annotated[
        str | None,
        typer.Option(
            help="Any repository's weights instead (USER/REPO, e.g. a fine-tuned model): its "
            "original-format file, else transformers' config.json and weights."
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
    asked for. With --repo the path is a file, or the folder of transformers' files, to pass
    to --checkpoint (or pass hf://USER/REPO there directly).
    """
    from sapiens2_cli.model import inspect_checkpoint
    from sapiens2_cli.weights.hub import resolve_checkpoint, resolve_repo

    local = {"revision": revision, "token": token, "local_dir": local_dir}
    if repo is not None:
        if task is not None:
            raise Sapiens2Error("--repo and --task name two sources: pass one of them")
        path = resolve_repo(repo, **local)
        inspect_checkpoint(path)
    else:
        path = resolve_checkpoint(arch, task, **local)
        inspect_checkpoint(path, arch)
    typer.echo(str(path))
