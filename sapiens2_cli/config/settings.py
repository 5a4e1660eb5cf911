"""How a setting is declared, and the settings an output records that no flag sets.

Every option of `sapiens2 extract` is one field of `ExtractOptions` (config/options.py)
declared with `setting(...)`: its Python type is the field's annotation, and the rest (what
a new output takes when it is left out, its help and panel on the command line, whether
OUT records it, with which meaning, and whether a resume must match it) is its `Setting`.
The command line, the defaults, the record an output keeps and docs/format.md's settings
table (a test) are read from those declarations; nothing copies them.

OUT also records facts the run derives (the checkpoint's hash, the token grid, the tool's
version, ...): `DERIVED` declares those, each with its meaning and resume rule, and
`RECORD_ORDER` is the order keys are written in (new settings go after these).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: The help panels of `extract`, in the order they are shown.
INPUTS, MODEL, KEEP, OUTPUT, RUNNING = "Inputs", "Model", "What to keep", "Output", "Running"


@dataclass(frozen=True)
class Setting:
    """Everything about one option but its type (the field's annotation)."""

    help: str  # the flag's help; `{default}` is replaced by the default's text
    panel: str
    default: Any = None  # what a run takes when the option is left out
    from_out: bool = False  # left out on a resume, the option takes OUT's value instead
    flags: tuple[str, ...] = ()  # the spellings on the command line; default `--name`
    cli: Any = None  # the type the command line reads (text parsed later), if not the field's
    metavar: str | None = None  # the value's name in --help, if not its type
    choice: type | None = None  # a choices.py enum: parsed, and its members listed in the help
    parse: Callable[[Any], Any] | None = None  # a value given (text or Python) -> the value
    record: str | None = None  # OUT's one-line meaning of it, if OUT records it
    record_as: str | None = None  # the key OUT records it under, if not the field's name
    resume: bool | str = False  # a resume must match OUT's value (str: the flags naming it)
    by_source: bool = False  # recorded by the input kind that uses it (Source.settings)

    def flag(self, name: str) -> str:
        """The flag's main spelling."""
        return self.flags[0].split("/")[0] if self.flags else "--" + name.replace("_", "-")


_UNSET = object()


def setting(
    help: str, panel: str, *, default: Any = None, value: Any = _UNSET, **declared: Any
) -> Any:
    """A field of ExtractOptions declared with its Setting. A `from_out` option's field is
    None until settled (a resume takes OUT's value, a new output the default); any other
    option's field holds its default, or `value` (None: known only once given, as
    --compile-mode, whose default applies with --compile)."""
    declaration = Setting(help, panel, default, **declared)
    if value is _UNSET:
        value = None if declaration.from_out else default
    if isinstance(value, (list, dict, set)):
        raise TypeError("a setting's default must be immutable")
    return field(default=value, metadata={"setting": declaration})


@dataclass(frozen=True)
class Record:
    """A key OUT records: its one-line meaning, and the flag a resume must match it under
    (None: a resume does not compare it)."""

    doc: str
    resume: str | None = None


#: What OUT records that no option sets directly: facts of the run and of the weights.
DERIVED: dict[str, Record] = {
    "checkpoint": Record("file name of the weights"),
    "checkpoint_sha256": Record("sha256 of that file", "--checkpoint/--arch"),
    "grid_size": Record("token grid"),
    "embed_dim": Record("D"),
    "mean": Record("RGB mean subtracted"),
    "std": Record("RGB std divided by"),
    "boxes": Record("file name of the box file"),
    "boxes_sha256": Record("sha256 of the box file", "--boxes"),
    "tool_version": Record("sapiens2-cli version that created the output"),
    "format_version": Record("version of this file format"),
    "complete": Record("true once a run ended with every input given a row or a failure record"),
    "part": Record("part k of N"),
    "parts": Record("the parts, relative to the join's folder"),
    "merge": Record("`virtual` or `copy`"),
    "projection": Record("the --project file, relative to OUT's folder if it can be"),
    "projection_sha256": Record("sha256 of the projection file", "--project"),
}

#: The order OUT's settings are written in; a key not listed (a new setting) follows them.
RECORD_ORDER = (
    "arch",
    "checkpoint",
    "checkpoint_sha256",
    "image_size",
    "grid_size",
    "embed_dim",
    "mean",
    "std",
    "resize",
    "jpeg_draft",
    "layers",
    "tokens",
    "layout",
    "dtype",
    "pool",
    "precision",
    "weights_dtype",
    "boxes",
    "boxes_sha256",
    "box_padding",
    "video_fps",
    "image_column",
    "key_column",
    "tool_version",
    "format_version",
    "complete",
    "part",
    "parts",
    "merge",
    "projection",
    "projection_sha256",
)


def stored(value: object) -> object:
    """A setting's value as files store it: choices as their text, tuples as lists."""
    if isinstance(value, tuple):
        return [stored(v) for v in value]
    return value.value if hasattr(value, "value") else value


def record_rank(key: str) -> int:
    """Where `key` goes in OUT's settings: its place in RECORD_ORDER, else after them."""
    return RECORD_ORDER.index(key) if key in RECORD_ORDER else len(RECORD_ORDER)


def in_record_order(settings: dict[str, object]) -> dict[str, object]:
    """`settings` without None values, in the order OUT writes them (sorting is stable:
    new keys keep the order they came in)."""
    keys = sorted((k for k, v in settings.items() if v is not None), key=record_rank)
    return {k: stored(settings[k]) for k in keys}
