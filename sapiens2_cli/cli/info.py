"""`sapiens2 info OUT`: what an extract output holds, read from its metadata only."""

from __future__ import annotations

import json
import math
from typing import Annotated

import typer

from sapiens2_cli.cli.options import JsonOption
from sapiens2_cli.text import plural


def info_command(
    output: Annotated[
        str,  # not a Path: an npy output may be at a URL (s3://bucket/feats/)
        typer.Argument(help="An HDF5 file or npy folder (or its URL) made by `sapiens2 extract`."),
    ],
    as_json: JsonOption = False,
) -> None:
    """Say what an output holds: rows, failures, settings, bytes per row, reductions, loss.

    Whether its run completed, too; read from its metadata only."""
    from sapiens2_cli.output.hdf5.reader import H5Features
    from sapiens2_cli.output.reader import open_features

    with open_features(output) as f:
        settings = dict(f.settings)
        fields = {
            "path": str(output),
            "format": "h5" if isinstance(f, H5Features) else "npy",
            "rows": len(f),
            "failed": len(f.failed),
            "complete": settings.pop("complete", False) is True,
            "bytes_per_row": f.row_nbytes,
            "row_shape": list(f.row_shape),
            "settings": settings,
            "reductions": f.reductions,
        }
    if as_json:
        typer.echo(json.dumps(_finite(fields), allow_nan=False))
        return
    state = "complete" if fields["complete"] else "incomplete (stopped, or still being written)"
    typer.echo(
        f"{output} ({fields['format']}): {plural(fields['rows'], 'row')}, "
        f"{fields['failed']} failed, {state}"
    )
    scales = " with float16 scales" if settings.get("dtype") == "int8" else ""
    typer.echo(
        f"bytes per row: {fields['bytes_per_row']:,} (features {settings.get('dtype')} "
        f"{tuple(fields['row_shape'])}{scales})"
    )
    typer.echo("settings: " + ", ".join(f"{k}={_text(v)}" for k, v in settings.items()))
    typer.echo("reductions:" if fields["reductions"] else "reductions: none")
    for name, record in fields["reductions"].items():
        params = ", ".join(f"{k}={_text(v)}" for k, v in record.items() if k != "loss")
        loss = record.get("loss")
        measured = (
            "; ".join(f"{k}={_text(v)}" for k, v in loss.items()) if loss else "nothing measured"
        )
        typer.echo(f"  {name}: {params}; loss: {measured}")


def _finite(value: object) -> object:
    """`value` with NaN and infinities as null: JSON has no word for them."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _text(value: object) -> str:
    """A setting or loss value, short: floats to 4 significant digits, lists comma-joined."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ",".join(map(_text, value))
    return str(value)
