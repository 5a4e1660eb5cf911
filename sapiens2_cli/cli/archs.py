"""`sapiens2 archs`: the published sizes, their cost, and whether they are downloaded."""

from __future__ import annotations

import json

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from sapiens2_cli.bench import count_cost
from sapiens2_cli.cli.options import JsonOption
from sapiens2_cli.hub import hub_file, is_cached
from sapiens2_cli.model import ARCHS


def archs_command(as_json: JsonOption = False) -> None:
    """List every arch with its size, cost, hub repository and whether it is cached.

    Width, depth, heads, exact parameters, FLOPs per image at the training size (2 per
    multiply-add, attention included).
    """
    rows = []
    for name, config in ARCHS.items():
        cost = count_cost(config, *config.image_size)
        rows.append(
            {
                "arch": name,
                "embed_dim": config.embed_dim,
                "layers": config.num_layers,
                "heads": config.num_heads,
                "parameters": cost.parameters,
                "image_size": list(config.image_size),
                "flops_per_image": cost.flops_per_image,
                "hub_repo": hub_file(name).repo_id,
                "cached": is_cached(name),
            }
        )
    if as_json:
        typer.echo(json.dumps(rows))
        return
    table = Table(
        box=box.SIMPLE_HEAD,
        caption="TFLOPs per image at the training size (HxW): FlopCounterMode, "
        "2 per multiply-add, attention included",
    )
    columns = ("arch", "D", "layers", "heads", "parameters", "TFLOPs", "HxW", "hub", "cached")
    for column in columns:
        table.add_column(column, justify="left" if column in ("arch", "hub") else "right")
    for r in rows:
        table.add_row(
            r["arch"],
            str(r["embed_dim"]),
            str(r["layers"]),
            str(r["heads"]),
            f"{r['parameters']:,}",
            f"{r['flops_per_image'] / 1e12:.3f}",
            "x".join(map(str, r["image_size"])),
            r["hub_repo"],
            "yes" if r["cached"] else "no",
        )
    console = Console()
    if not console.is_terminal:  # piped: do not squeeze the table into 80 columns
        console.width = 160
    console.print(table)
