"""`sapiens2 pca OUT -k K -o proj.safetensors`: fit the projection `extract --project` uses."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from sapiens2_cli.cli.options import JsonOption, QuietOption, flag_option, option


def pca_command(
    source: Annotated[
        str,  # not a Path: an npy output may be at a URL (s3://bucket/feats/)
        typer.Argument(
            help="An extract output (.h5 file or npy folder, or its URL) to fit on.",
            metavar="OUT",
        ),
    ],
    k: Annotated[int, option("-k", help="Components kept (at most D).")] = ...,
    output: Annotated[
        str, option("--output", "-o", help="The projection file to write (.safetensors).")
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
    from sapiens2_cli.remote import is_url

    if is_url(output):
        raise Sapiens2Error(
            f"-o {output}: the projection file is written locally (extract --project reads a "
            "local file): give a local path, then copy it if you like"
        )
    output = Path(output)
    check_projection_target(output)
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


def check_projection_target(output: Path) -> None:
    """Refuse, before the fit, a projection file that could not be written after it."""
    from sapiens2_cli.errors import Sapiens2Error

    folder = output.parent
    if not folder.is_dir():
        raise Sapiens2Error(
            f"cannot write {output}: the folder {folder} does not exist; make it, or choose "
            "another -o"
        )
    if output.is_dir():
        raise Sapiens2Error(f"{output} is a folder: give -o a file name (proj.safetensors)")
    if not os.access(folder, os.W_OK):
        raise Sapiens2Error(f"cannot write {output}: {folder} is not writable; choose another -o")
