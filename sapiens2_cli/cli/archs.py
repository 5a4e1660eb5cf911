"""`sapiens2 archs`: the published sizes, their cost, and whether they are downloaded.

The counts come from the zoo table (model/zoo.py), so this needs neither torch nor a
model; only the cache check imports huggingface_hub.
"""

from __future__ import annotations

import json
import shutil
import textwrap

import typer

from sapiens2_cli.cli.options import JsonOption
from sapiens2_cli.model.config import ARCHS
from sapiens2_cli.model.zoo import ZOO_COST

_CAPTION = (
    "TFLOPs per image at the training size (HxW): FlopCounterMode, 2 per multiply-add, "
    "attention included"
)


def archs_command(as_json: JsonOption = False) -> None:
    """List every arch with its size, cost, hub repository and whether it is cached.

    Width, depth, heads, exact parameters, FLOPs per image at the training size (2 per
    multiply-add, attention included).
    """
    from sapiens2_cli.weights.hub import TASKS, hub_file, is_cached, task_archs

    rows = [
        {
            "arch": name,
            "embed_dim": config.embed_dim,
            "layers": config.num_layers,
            "heads": config.num_heads,
            "parameters": ZOO_COST[name].parameters,
            "image_size": list(config.image_size),
            "flops_per_image": ZOO_COST[name].flops_per_image,
            "hub_repo": hub_file(name).repo_id,
            "cached": is_cached(name),
            "tasks": [t for t in TASKS if name in task_archs(t)],
        }
        for name, config in ARCHS.items()
    ]
    if as_json:
        typer.echo(json.dumps(rows))
        return
    tasks = ", ".join(f"{t} ({', '.join(task_archs(t))})" for t in TASKS)
    note = f"task checkpoints (`sapiens2 download --task`): {tasks}"
    typer.echo(_table(rows, shutil.get_terminal_size().columns, note))


def _table(rows: list[dict], width: int, tasks: str = "") -> str:
    """Plain text within `width` columns (a pipe counts as 80): the hub column only when it
    fits, else one line under the table; never padding at the end of a line."""
    cells = [
        [
            r["arch"],
            str(r["embed_dim"]),
            str(r["layers"]),
            str(r["heads"]),
            f"{r['parameters']:,}",
            f"{r['flops_per_image'] / 1e12:.3f}",
            "x".join(map(str, r["image_size"])),
            "yes" if r["cached"] else "no",
            r["hub_repo"],
        ]
        for r in rows
    ]
    header = ["arch", "D", "layers", "heads", "parameters", "TFLOPs", "HxW", "cached", "hub"]
    left = {"arch", "cached", "hub"}
    table = [header, *cells]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    with_hub = sum(widths) + 2 * (len(widths) - 1) <= width
    keep = len(header) if with_hub else len(header) - 1
    lines = [
        "  ".join(
            row[i].ljust(widths[i]) if header[i] in left else row[i].rjust(widths[i])
            for i in range(keep)
        ).rstrip()
        for row in table
    ]
    notes = [_CAPTION, *([tasks] if tasks else [])]
    if not with_hub:
        notes.append("hub: facebook/sapiens2-pretrain-ARCH (`sapiens2 archs --json` lists each)")
    lines.append("")
    lines += [
        line
        for note in notes
        for line in textwrap.wrap(note, max(width, 20), break_on_hyphens=False)
    ]
    return "\n".join(lines)
