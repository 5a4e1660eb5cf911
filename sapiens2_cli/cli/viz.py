"""`sapiens2 viz FEATURES -o DIR`: PCA colour pictures of extracted patch features."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from sapiens2_cli.cli.options import JsonOption, QuietOption, choice_option, flag_option
from sapiens2_cli.config.choices import FitMode
from sapiens2_cli.text import plural


def viz_command(
    features: Annotated[
        str,  # not a Path: an npy output may be at a URL (s3://bucket/feats/)
        typer.Argument(
            help="An HDF5 file or npy folder (or its URL) written by `sapiens2 extract`."
        ),
    ],
    out: Annotated[Path, typer.Option("--output", "-o", help="Folder for the PNGs (created).")],
    images: Annotated[
        int | None, typer.Option(help="Draw the first N images of the file (default: 16).")
    ] = None,
    paths: Annotated[
        list[str] | None,
        typer.Option("--paths", "--path", help="Draw this image, by its stored path (repeat)."),
    ] = None,
    layer: Annotated[
        int | None, typer.Option(help="Block index, one of those stored (default: the last).")
    ] = None,
    components: Annotated[
        int, typer.Option(help="3: the first three components as RGB; 1: the first as grey.")
    ] = 3,
    fit: Annotated[
        FitMode,
        choice_option(FitMode, "--fit", "How colours are fitted", default=FitMode.PER_IMAGE),
    ] = FitMode.PER_IMAGE,
    foreground_threshold: Annotated[
        float | None,
        typer.Option(
            help="Black out the background: keep pixels whose first component, scaled to "
            "0-1 with the image border low, is above T (try 0.5); colours are then fitted "
            "on the foreground."
        ),
    ] = None,
    overlay: Annotated[
        bool,
        flag_option(
            "--overlay/--no-overlay",
            help="Put the input image, read from its stored path, on the left.",
        ),
    ] = False,
    grid: Annotated[
        bool,
        flag_option(
            "--grid/--no-grid", help="Also write grid.png, a contact sheet of all the pictures."
        ),
    ] = False,
    long_side: Annotated[
        int, typer.Option(help="Longer side of each picture in pixels (original aspect).")
    ] = 512,
    image_root: Annotated[
        Path | None,
        typer.Option(help="Look up relative stored paths under this folder (default: here)."),
    ] = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Draw the first principal components of each image's patch features as colours."""
    from sapiens2_cli.viz import VizOptions, visualize

    options = VizOptions(
        layer=layer,
        components=components,
        fit=fit,
        foreground_threshold=foreground_threshold,
        overlay=overlay,
        grid=grid,
        long_side=long_side,
        image_root=image_root,
    )
    result = visualize(features, out, options, images=images, paths=paths, progress=not quiet)
    if as_json:
        summary = {
            "features": str(features),
            "output": str(out),
            "pictures": [str(p) for p in result.pictures],
            "grid": None if result.grid is None else str(result.grid),
            "missing_images": result.missing_images,
        }
        typer.echo(json.dumps(summary))
    elif not quiet:
        sheet = f", contact sheet {result.grid}" if result.grid else ""
        typer.echo(f"wrote {plural(len(result.pictures), 'picture')} to {out}{sheet}", err=True)
