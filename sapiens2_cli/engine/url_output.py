"""`extract -o s3://bucket/feats/`: the run writes a staging folder that output/url/staged.py
uploads commit by commit; here, what such an OUT refuses, and the URL (not the staging
folder) in every line and summary the run gives back."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from sapiens2_cli.config.choices import OutputFormat
from sapiens2_cli.config.options import ExtractOptions
from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.output import infer_format

if TYPE_CHECKING:
    from sapiens2_cli.engine.progress import Summary
    from sapiens2_cli.output.url.staged import Upload


def check_url_output(url: str, opts: ExtractOptions, parted: bool) -> None:
    """What a URL OUT cannot do, each one line before any work; `parted`: this process
    writes one part of a split job."""
    if infer_format(Path(url), opts.format) == OutputFormat.H5:
        raise Sapiens2Error(
            f"HDF5 output must be local: write it locally, then copy it (e.g. aws s3 cp "
            f"f.h5 {url}); or give a prefix for npy shards (-o s3://bucket/feats/)"
        )
    if parted:
        raise Sapiens2Error(
            "--shard and torchrun parts write beside OUT, which must then be local: give "
            "a local -o, then copy the merged output"
        )
    if opts.project is not None:
        raise Sapiens2Error(
            "--project records the projection's path relative to OUT, which must then be "
            "local: give a local -o, then copy the output"
        )


def run_at_url(
    url: str, opts: ExtractOptions, parted: bool, run: Callable[[Path, Upload], Summary | None]
) -> Summary | None:
    """`run(staging folder, upload)` for OUT at `url`, naming `url` in what it gives back."""
    from sapiens2_cli.output.url.staged import staged_output

    check_url_output(url, opts, parted)
    with staged_output(url, opts.overwrite, opts.unguarded_commits) as (folder, upload):
        try:
            summary = run(folder, upload)
        except Sapiens2Error as e:
            raise Sapiens2Error(str(e).replace(str(folder), url.rstrip("/"))) from None
        except KeyboardInterrupt as stop:  # Interrupted carries the summary so far
            if hasattr(stop, "summary"):
                stop.summary = replace(stop.summary, output=url)
            raise
    return summary if summary is None else replace(summary, output=url)
