"""`sapiens2 merge [PARTS...] -o OUT`: join the parts of a split extract job into one output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from sapiens2_cli.cli.options import JsonOption, QuietOption, choice_option, flag_option
from sapiens2_cli.config.choices import MergeMode
from sapiens2_cli.text import plural


def merge_command(
    parts: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Parts (files or npy folders) or folders holding them; default: the parts "
            "beside OUT (OUT.parts/).",
            show_default=False,
        ),
    ] = None,
    output: Annotated[
        str,
        typer.Option("--output", "-o", help="OUT: the -o the extract jobs were given."),
    ] = ...,
    merge: Annotated[
        MergeMode,
        choice_option(
            MergeMode,
            "--merge",
            "How to join (HDF5: a virtual dataset; npy: a manifest of the parts' shards)",
            default=MergeMode.VIRTUAL,
        ),
    ] = MergeMode.VIRTUAL,
    overwrite: Annotated[
        bool,
        flag_option(
            "--overwrite/--no-overwrite", help="Replace an OUT that holds a single run's output."
        ),
    ] = False,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Join the parts written by `extract --shard I/N` jobs (checks settings, overlaps, gaps)."""
    from sapiens2_cli.output.merge import check_join_target, merge_outputs
    from sapiens2_cli.output.parts import find_parts
    from sapiens2_cli.output.reader import detect_format

    output = _local_output(output)
    paths = [p for given in parts or [] for p in _expand(given)] or find_parts(output)
    if paths:
        check_join_target(output, detect_format(paths[0]) or "h5", overwrite)
    merged = merge_outputs(paths, output, merge)
    if not quiet:
        where = (
            "virtual: the features stay in the parts; move them together with it"
            if merge == MergeMode.VIRTUAL
            else "a self-contained copy"
        )
        typer.echo(
            f"joined {plural(merged.parts, 'part')} ({plural(merged.rows, 'row')}, "
            f"{merged.failed} failed) "
            f"into {output} ({where})",
            err=True,
        )
    if as_json:
        summary = {
            "output": str(output),
            "parts": merged.parts,
            "rows": merged.rows,
            "failed": merged.failed,
            "merge": merge,
        }
        typer.echo(json.dumps(summary))


def _local_output(output: str) -> Path:
    """Parts and their join live side by side on a local disk: a URL OUT is one line."""
    from sapiens2_cli.errors import Sapiens2Error
    from sapiens2_cli.remote import is_url, local_path

    if is_url(output):
        raise Sapiens2Error(
            f"merge writes a local output: merge into a local -o, then copy it to {output}"
        )
    return Path(local_path(output))


def _expand(path: Path) -> list[Path]:
    """A folder of parts (such as OUT.parts) stands for the parts in it."""
    from sapiens2_cli.output.parts import parts_in
    from sapiens2_cli.output.reader import detect_format

    if path.is_dir() and detect_format(path) is None:
        return parts_in(path) or [path]
    return [path]
