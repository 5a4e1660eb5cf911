"""`sapiens2 extract INPUT... -o OUT`: images in, features out, resumable, nothing lost.

The command's options are ExtractOptions' fields as config/options.py declares them: the
signature below is built from those declarations, so a new option is declared there once.
"""

from __future__ import annotations

import copy
import inspect
import json
from typing import Annotated, Any

import typer

from sapiens2_cli.cli.options import (
    JsonOption,
    QuietOption,
    declared_option,
    flag_option,
    given_once,
    option,
)
from sapiens2_cli.config.options import declarations  # light: no torch
from sapiens2_cli.config.settings import OUTPUT, RUNNING

#: The command's own parameters, around the options of the job.
_INPUTS = Annotated[
    list[str] | None,
    typer.Argument(
        help="Image, video, tar (.tar, .tar.gz, ...) or Parquet / Arrow (.parquet, .arrow) "
        "files, folders (walked recursively), brace patterns (shards/{00000..00099}.tar) "
        "or - to read paths from stdin.",
        show_default=False,
    ),
]
_OUTPUT = Annotated[
    str,
    option(
        "--output",
        "-o",
        help="OUT: a .h5/.hdf5 file or a folder of .npy shards (local, or a URL prefix).",
        panel=OUTPUT,
    ),
]


def in_panel(shared: Any) -> Any:
    """A shared option shown in extract's Running panel."""
    info = copy.copy(shared.__metadata__[0])
    info.rich_help_panel = RUNNING
    return Annotated[shared.__origin__, info]


_STRICT = Annotated[
    bool,
    flag_option(
        "--strict",
        help="Exit with code 3 when any input failed (the run still goes to the end).",
        panel=RUNNING,
    ),
]


def extract_command(
    inputs: list[str] | None,
    output: str,
    strict: bool,
    as_json: bool,
    quiet: bool,
    **flags: Any,
) -> None:
    """Extract features of every input into OUT; rerun the same command to resume.

    Settings left out (--size, --resize, --layers, --tokens, --layout,
    --dtype, --pool, --precision, --arch, --fps/--every-frame) are taken from OUT
    when it exists, so a resume needs only the inputs and -o.
    """
    from sapiens2_cli.config.options import ExtractOptions
    from sapiens2_cli.scaleout.launch import extract  # no torch yet: see engine/job.py

    flags["files_from"] = tuple(flags["files_from"] or ())
    options = ExtractOptions(**{**flags, "dtype": given_once(flags["dtype"], "--dtype")})
    try:
        summary = extract(inputs or [], output, options, progress=not quiet)
    except KeyboardInterrupt as stop:
        from sapiens2_cli.engine.runner import Interrupted  # the loop's: loaded by now

        if not isinstance(stop, Interrupted):
            raise
        _report(stop.summary, as_json, quiet)
        typer.echo(
            f"interrupted: {stop.summary.rows} rows are safe in {stop.summary.output}; run "
            "the same command again to resume",
            err=True,
        )
        raise typer.Exit(130) from None
    if summary is None:  # a torchrun rank other than 0: rank 0 reports for all
        return
    _report(summary, as_json, quiet)
    if summary.next_step and not quiet:
        typer.echo(summary.next_step, err=True)
    if strict and summary.failed_total:
        raise typer.Exit(3)


def _report(summary, as_json: bool, quiet: bool) -> None:
    if not quiet:
        typer.echo(summary.describe(), err=True)
    if as_json:
        typer.echo(json.dumps(summary.to_json()))


def _signature() -> inspect.Signature:
    """INPUT, then each option as declared (OUT among the Output options, before --format),
    then --strict, --json and --quiet: the order --help lists them in, by panel."""
    keyword = inspect.Parameter.KEYWORD_ONLY
    params = [inspect.Parameter("inputs", keyword, default=None, annotation=_INPUTS)]
    for name in declarations():
        if name == "format":
            params.append(inspect.Parameter("output", keyword, default=..., annotation=_OUTPUT))
        kind, start = declared_option(name)
        params.append(inspect.Parameter(name, keyword, default=start, annotation=kind))
    params.append(inspect.Parameter("strict", keyword, default=False, annotation=_STRICT))
    for name, shared in (("as_json", JsonOption), ("quiet", QuietOption)):
        params.append(inspect.Parameter(name, keyword, default=False, annotation=in_panel(shared)))
    return inspect.Signature(params)


extract_command.__signature__ = _signature()
