"""The `sapiens2` command line: a Typer app, one module per command.

Importing this module gives the complete app without importing torch, h5py or Pillow:
each command imports what it needs when it runs, so `--help` and `archs` start fast.
Every error a user can fix, the parser's usage errors included, is one line
`error: ...` on stderr and exit code 2; `SAPIENS2_DEBUG=1` shows the traceback instead.
Ctrl-C at any moment exits 130 with one line.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from sapiens2_cli.cli import archs, bench, download, extract, info, inspect, merge, pca, viz
from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.interrupt import ctrl_c_deferred, exit_interrupted, exit_on_ctrl_c_in_imports
from sapiens2_cli.version import __version__


class _Interrupted(Exception):
    """Ctrl-C, carried past Typer (which would turn it into a silent exit 130) to main()."""


class _Commands(TyperGroup):
    """The root group: hands Ctrl-C, wherever it lands, to main()."""

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        try:  # parsing imports pydantic on first use
            return super().make_context(*args, **kwargs)
        except KeyboardInterrupt:
            raise _Interrupted from None

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise _Interrupted from None

    def get_help_option(self, ctx: Any) -> Any:
        return _without_type(super().get_help_option(ctx))

    def get_command(self, ctx: Any, name: str) -> Any:
        command = super().get_command(ctx, name)
        if command is not None:  # each command's --help, as the root's
            get = command.get_help_option
            command.get_help_option = lambda ctx: _without_type(get(ctx))
        return command


def _without_type(option: Any) -> Any:
    """--help is a flag: no `<bool>` value type in the help."""
    if option is not None:
        option.metavar = ""
    return option


app = typer.Typer(
    name="sapiens2",
    cls=_Commands,
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
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Show version.", metavar=""
        ),
    ] = False,
) -> None:
    """Dense per-patch features from Meta's Sapiens2 backbones."""


app.command("extract")(extract.extract_command)
app.command("download")(download.download_command)
app.command("archs")(archs.archs_command)
app.command("bench")(bench.bench_command)
app.command("inspect")(inspect.inspect_command)
app.command("viz")(viz.viz_command)
app.command("merge")(merge.merge_command)
app.command("pca")(pca.pca_command)
app.command("info")(info.info_command)


def _fail(message: str, code: int) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def main() -> None:
    """Console-script entry point: every way out is an exit code and at most one line."""
    debug = os.environ.get("SAPIENS2_DEBUG") == "1"
    try:  # from the first line: a Ctrl-C here is one line and 130 too
        exit_on_ctrl_c_in_imports()
        with ctrl_c_deferred():  # a handler cut in half breaks logging's shutdown
            logging.basicConfig(format="%(levelname)s: %(message)s", level=logging.WARNING)
        logging.getLogger("huggingface_hub").propagate = False  # it has its own handler
        code = app(standalone_mode=False)
    except (KeyboardInterrupt, _Interrupted):
        exit_interrupted()
    except Sapiens2Error as e:
        if debug:
            raise
        _fail(str(e), 2)
    except typer.TyperException as e:  # the parser's: unknown option, bad value, ...
        if debug:
            raise
        if type(e).__name__ == "NoArgsIsHelpError":  # bare `sapiens2`: the help
            if e.format_message():  # rich has printed it already, on stdout
                print(e.format_message(), file=sys.stderr)
            sys.exit(e.exit_code)
        ctx = getattr(e, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        _fail(e.format_message().rstrip(".") + hint, e.exit_code)
    except typer.Abort:
        _fail("aborted", 1)
    sys.exit(code if isinstance(code, int) else 0)
