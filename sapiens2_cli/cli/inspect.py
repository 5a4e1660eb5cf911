"""`sapiens2 inspect CHECKPOINT`: what a checkpoint holds, read from its headers only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from sapiens2_cli.cli.options import JsonOption


def inspect_command(
    checkpoint: Annotated[
        Path,
        typer.Argument(help="A .safetensors checkpoint, or a transformers save_pretrained folder."),
    ],
    arch: Annotated[str | None, typer.Option(help="Fail unless the file holds this arch.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Say which Sapiens2 backbone a checkpoint holds, without loading its tensors."""
    from sapiens2_cli.model import inspect_checkpoint

    info = inspect_checkpoint(checkpoint, arch)
    c = info.config
    fields = {
        "path": str(info.path),
        "arch": info.arch,
        "embed_dim": c.embed_dim,
        "layers": c.num_layers,
        "heads": c.num_heads,
        "kv_heads": list(c.block_kv_heads()),
        "ffn_dim": c.ffn_dim,
        "tokenizer_layers": c.num_tokenizer_layers,
        "parameters": info.num_parameters,
        "dtypes": list(info.dtypes),
        "task_checkpoint": bool(info.prefix),
        "task": info.task,
        "layout": "upstream" if info.layout is None else "transformers",
    }
    if as_json:
        typer.echo(json.dumps(fields))
    else:
        notes = "".join(
            [
                f", the backbone of a {info.task} checkpoint" if info.task else "",
                ", in transformers' layout" if info.layout is not None else "",
            ]
        )
        typer.echo(f"{info.path}: {info.describe()}, {info.num_parameters:,} parameters{notes}")
