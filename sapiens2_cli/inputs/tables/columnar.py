"""Parquet and Arrow IPC files as groups of rows: which column holds the images, one group's
cells at a time.

A Parquet file is read by row group (`ParquetFile.read_row_group` with only the columns
asked for) and an Arrow IPC file (`.arrow`, `.feather` v2) by record batch, memory-mapped;
both are "groups" here, so no file is ever read whole (a URL's object is streamed in
ranged reads, remote.open_input). pyarrow is an optional extra,
imported only when such a file is met, so `import sapiens2_cli` and `--help` never load it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.remote import is_url, open_input
from sapiens2_cli.text import one_line

PARQUET_EXTENSIONS = frozenset({".parquet"})
ARROW_EXTENSIONS = frozenset({".arrow", ".feather"})


def pyarrow():
    """The pyarrow module, or one line naming the extra that installs it."""
    try:
        import pyarrow as pa
        import pyarrow.ipc
        import pyarrow.parquet
    except ImportError:
        raise Sapiens2Error(
            "Parquet and Arrow inputs need pyarrow: pip install 'sapiens2-cli[parquet]'"
        ) from None
    return pa


class ColumnarError(Exception):
    """A file that cannot be read as Parquet / Arrow IPC; the message is one line."""


@dataclass(frozen=True)
class Layout:
    """What expanding a file needs: the rows in each group and the columns' types."""

    group_rows: list[int]
    types: dict[str, object]  # column name -> pyarrow DataType


class ColumnarFile:
    """One open Parquet or Arrow IPC file; `read` gives one group's columns."""

    def __init__(self, path: str) -> None:
        pa = pyarrow()
        self.path = path
        self._arrow = path.lower().endswith(tuple(ARROW_EXTENSIONS))
        try:
            source = open_input(path) if is_url(path) else None  # streamed, read-ahead
            if self._arrow:
                self._file = pa.ipc.open_file(source or pa.memory_map(path, "r"))
            else:
                self._file = pa.parquet.ParquetFile(source or path, memory_map=False)
        except (OSError, pa.ArrowException) as e:
            kind = "an Arrow IPC" if self._arrow else "a Parquet"
            raise ColumnarError(f"not {kind} file, or unreadable: {one_line(e)}") from None

    def layout(self) -> Layout:
        schema = self._file.schema if self._arrow else self._file.schema_arrow
        types = {f.name: f.type for f in schema}
        if self._arrow:
            rows = [self._file.get_batch(i).num_rows for i in range(self._file.num_record_batches)]
        else:
            meta = self._file.metadata
            rows = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        return Layout(rows, types)

    def read(self, group: int, column: str):
        """Group `group`'s `column` as a pyarrow (Chunked)Array; raises ColumnarError."""
        pa = pyarrow()
        try:
            if self._arrow:
                return self._file.get_batch(group).column(column)
            return self._file.read_row_group(group, columns=[column]).column(0)
        except (OSError, pa.ArrowException) as e:
            raise ColumnarError(f"cannot read row group {group}: {one_line(e)}") from None


def is_binary(kind) -> bool:
    """Binary, or dictionary-encoded binary (repeated images stored once)."""
    pa = pyarrow()
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return pa.types.is_binary(kind) or pa.types.is_large_binary(kind)


def holds_images(kind) -> bool:
    """A binary column, or a struct with a binary `bytes` field (Hugging Face `Image`)."""
    pa = pyarrow()
    if pa.types.is_struct(kind):
        index = kind.get_field_index("bytes")
        return index >= 0 and is_binary(kind.field(index).type)
    return is_binary(kind)


def image_column(layout: Layout, path: str, wanted: str | None) -> str:
    """The column holding the images: `wanted` (--image-column), or the only one whose type
    holds images; raises Sapiens2Error naming the choices."""
    found = [name for name, kind in layout.types.items() if holds_images(kind)]
    if wanted is not None:
        if wanted not in layout.types:
            raise Sapiens2Error(
                f"{path} has no column {wanted!r} (--image-column): it has "
                f"{_names(list(layout.types))}"
            )
        if wanted not in found:
            raise Sapiens2Error(
                f"--image-column {wanted} in {path} is {layout.types[wanted]}, not images: "
                "give a binary column or a struct with a binary `bytes` field"
            )
        return wanted
    if not found:
        raise Sapiens2Error(
            f"{path} has no image column (a binary column, or a struct with a binary `bytes` "
            f"field): its columns are {_names(list(layout.types))}"
        )
    if len(found) > 1:
        raise Sapiens2Error(
            f"{path} has several image columns ({_names(found)}): choose one with --image-column"
        )
    return found[0]


def cells(array, rows: Sequence[int]) -> list[bytes | str | None]:
    """The image bytes of `rows` of a group's image column (None where null, a one-line
    reason where a path in the cell cannot be read)."""
    values = array.take(list(rows)).to_pylist()
    return [_image_cell(v) if isinstance(v, dict) else v for v in values]


def _image_cell(value: dict) -> bytes | str | None:
    """A Hugging Face `Image` cell: its bytes, or with none the file at its `path`, which
    `datasets` opens as given (a local path from the current folder, or a URL)."""
    if value.get("bytes") is not None or not value.get("path"):
        return value.get("bytes")
    path = value["path"]
    try:
        if is_url(path):
            with open_input(path) as f:
                return f.read()
        with open(path, "rb") as f:
            return f.read()
    except Exception as e:  # a missing file, an unreachable URL: this row's failure
        return f"the cell has no bytes and its path {path} cannot be read ({one_line(e)})"


def _names(names: Sequence[str]) -> str:
    return ", ".join(map(repr, names)) or "none"
