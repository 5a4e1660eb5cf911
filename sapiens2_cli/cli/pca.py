"""`sapiens2 pca OUT -k K -o proj.safetensors`: fit the projection `extract --project` uses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from sapiens2_cli.cli.options import JsonOption, QuietOption, flag_option, option


def pca_command(
    source: Annotated[
        Path,
        typer.Argument(help="An extract output (.h5 file or npy folder) to fit on.", metavar="OUT"),
    ],
    k: Annotated[int, option("-k", help="Components kept (at most D).")] = ...,
    output: Annotated[
        Path, option("--output", "-o", help="The projection file to write (.safetensors).")
    ] = ...,
    rows: Annotated[
        int | None,
        option(help="Fit on this many rows, evenly spaced over OUT (default: every row)."),
    ] = None,
    overwrite: Annotated[
        bool, flag_option("--overwrite", help="Replace an existing projection file.")
    ] = False,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Fit a k-component PCA on the tokens of OUT, streaming (memory: one D x D matrix)."""
    from sapiens2_cli.errors import Sapiens2Error
    from sapiens2_cli.output import open_features
    from sapiens2_cli.reduce.pca import fit
    from sapiens2_cli.reduce.projection import load_projection

    if output.exists() and not overwrite:
        raise Sapiens2Error(f"{output} exists: pass --overwrite to replace it, or another -o")
    if output.exists():
        load_projection(output)  # --overwrite replaces only a projection file
    with open_features(source) as rows_read:
        projection = fit(rows_read, k, rows)
    sha256 = projection.save(output)
    summary = {
        "output": str(output),
        "sha256": sha256,
        "k": projection.k,
        "embed_dim": projection.dim,
        "rows": int(projection.metadata["rows"]),
        "samples": int(projection.metadata["samples"]),
        "variance_kept": projection.variance_kept,
    }
    if not quiet:
        typer.echo(
            f"fitted {projection.k} of {projection.dim} components on {summary['samples']} "
            f"tokens of {summary['rows']} rows, keeping {summary['variance_kept']:.1%} of "
            f"their variance, into {output}",
            err=True,
        )
    if as_json:
        typer.echo(json.dumps(summary))
