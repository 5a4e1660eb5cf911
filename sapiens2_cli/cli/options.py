"""Options on the command line: extract's, as config/options.py declares them (shared with
the commands that take the same flags, so `--arch`, `--device` read the same everywhere),
`--json` and `--quiet`, and the two kinds of option: choices parsed into their
config/choices.py enum, and flags shown without a value type."""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any, get_type_hints

import typer

from sapiens2_cli.config.choices import Choice
from sapiens2_cli.config.options import ExtractOptions, declarations  # light: no torch
from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.model.config import ARCHS


def choice_option(
    choice: type[Choice],
    flag: str,
    lead: str,
    *,
    default: Choice | None = None,
    panel: str | None = None,
) -> Any:
    """`flag` parsed into a member of `choice` (Choice.parse's one error wording); its
    help is `lead` and the choices with their meanings, `default` marked (the value type
    column lists the choices)."""
    description = choice.describe(default)
    separator = " " if description.startswith("(") else ": "
    help = f"{lead}{separator}{description}." if description else f"{lead}."
    return option(flag, help=help, panel=panel, parser=partial(choice.parse, flag=flag))


def option(
    *names: str, help: str, panel: str | None = None, show_default: bool = False, **kw: Any
) -> Any:
    """An option in help `panel` whose help text says its default, if it has one (or,
    `show_default`, whose default the help shows)."""
    return typer.Option(*names, help=help, show_default=show_default, rich_help_panel=panel, **kw)


def flag_option(*names: str, help: str, panel: str | None = None) -> Any:
    """An on/off flag: no value, so no value type in the help."""
    return option(*names, help=help, panel=panel, metavar="")


def declared_option(name: str, panel: bool = True) -> tuple[Any, Any]:
    """Extract's option `name` as its declaration says (config/options.py): the annotated
    command-line type, and the default the command line starts from. `panel`: shown in
    the declaration's help panel (extract groups its many flags; other commands do not)."""
    declared = declarations()[name]
    kind = declared.cli or get_type_hints(ExtractOptions)[name]
    flag = declared.flag(name)
    help = declared.help.format(default=_DefaultText(declared.default), archs=", ".join(ARCHS))
    where = declared.panel if panel else None
    if declared.choice is not None:
        info = choice_option(declared.choice, flag, help, default=declared.default, panel=where)
    elif kind in (bool, bool | None):
        info = flag_option(*(declared.flags or (flag,)), help=help, panel=where)
    else:  # the help shows a default its text does not give
        shown = "{default" not in declared.help
        names, metavar = declared.flags or (flag,), declared.metavar
        extra = {"metavar": metavar} if metavar else {}
        info = option(*names, help=help, panel=where, show_default=shown, **extra)
    start = getattr(ExtractOptions, name)  # the field's value when not given
    if declared.cli is not None:  # text the command line passes on to the options
        start = None if start is None or start == () else str(start)
    return Annotated[kind, info], start


class _DefaultText:
    """A default in a help text: `{default:g}` formats numbers, `{default:on/off}` a flag,
    a tuple of blocks reads as the command line writes it (-1 or 8,17)."""

    def __init__(self, value: object) -> None:
        self.value = value

    def __format__(self, spec: str) -> str:
        if spec == "on/off":
            return "on" if self.value else "off"
        if isinstance(self.value, tuple):
            return ",".join(map(str, self.value))
        return format(self.value, spec)


ArchOption = declared_option("arch", panel=False)[0]
CheckpointOption = declared_option("checkpoint", panel=False)[0]
SizeOption = declared_option("size", panel=False)[0]
DeviceOption = declared_option("device", panel=False)[0]
PrecisionOption = declared_option("precision", panel=False)[0]
BatchSizeOption = declared_option("batch_size", panel=False)[0]
JsonOption = Annotated[
    bool,
    flag_option("--json", help="Print one JSON object on stdout (logs stay on stderr)."),
]
QuietOption = Annotated[bool, flag_option("--quiet", "-q", help="No progress bar or summary.")]


def given_once(values: list[Choice] | None, flag: str) -> Choice | None:
    """A choice option that must not be given twice (`--dtype int8 --dtype float16` would
    silently keep the last): the one value, None if not given."""
    if values and len(set(values)) > 1:
        given = " and ".join(f"{flag} {v}" for v in values)
        raise Sapiens2Error(f"{given} both choose one setting: give {flag} once")
    return values[0] if values else None
