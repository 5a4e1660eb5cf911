"""The `sapiens2` command line: a Typer app, one module per command.

Errors a user can fix (Sapiens2Error) become one line on stderr and exit code 2; usage
errors are Typer's own (exit 2). `SAPIENS2_DEBUG=1` shows the traceback instead.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Annotated

import typer

from sapiens2_cli import __version__
from sapiens2_cli.errors import Sapiens2Error

app = typer.Typer(
    name="sapiens2",
    help="Dense per-patch features from Meta's Sapiens2 backbones.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"sapiens2-cli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="Show version."),
    ] = False,
) -> None:
    """Dense per-patch features from Meta's Sapiens2 backbones."""


def _register_commands() -> None:
    from sapiens2_cli.cli import archs, bench, download, extract, inspect, merge, viz

    app.command("extract")(extract.extract_command)
    app.command("download")(download.download_command)
    app.command("archs")(archs.archs_command)
    app.command("bench")(bench.bench_command)
    app.command("inspect")(inspect.inspect_command)
    app.command("viz")(viz.viz_command)
    app.command("merge")(merge.merge_command)


def main() -> None:
    """Console-script entry point."""
    logging.basicConfig(format="%(levelname)s: %(message)s", level=logging.WARNING)
    logging.getLogger("huggingface_hub").propagate = False  # it has its own handler
    _register_commands()
    try:
        app()
    except Sapiens2Error as e:
        if os.environ.get("SAPIENS2_DEBUG") == "1":
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
