"""Parquet and Arrow IPC files (Hugging Face image datasets, img2dataset's output) -> one
item per row of the image column, decoded as the same bytes in a loose file would be.

Keys are `FILE.parquet#row=N` (N the row in the file, from 0), or with `--key-column` '#'
and that column's value (an id that survives re-sharding the dataset; it must be unique,
not null and without NUL; the '#' keeps it apart from every file's key).
`ParquetSource.expand` reads only metadata (and the key column); `ParquetReader` reads
the image column one group (row group / record batch) at a time, in the decode workers:
columnar.py has the file access.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import TYPE_CHECKING

from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.files import file_state
from sapiens2_cli.inputs.items import Failure, Item, Reader, bytes_row, derived_key, file_key
from sapiens2_cli.inputs.sources import Expansion, Source
from sapiens2_cli.inputs.tables.columnar import (
    ARROW_EXTENSIONS,
    PARQUET_EXTENSIONS,
    ColumnarError,
    ColumnarFile,
    Layout,
    cells,
    image_column,
    pyarrow,
)

if TYPE_CHECKING:
    from sapiens2_cli.inputs.items import Preprocess, Row


@dataclass(frozen=True)
class Cell:
    """Where a row's image lies: its group and its row in that group."""

    group: int
    row: int


#: The group this process read last: (file_state, column, group) -> its image column. A
#: decode worker gets a group's runs of rows in order, so each group is read once by it.
_last: dict[tuple, object] = {}


def _group(path: str, column: str, group: int):
    key = (file_state(path), column, group)
    if key not in _last:
        _last.clear()
        _last[key] = ColumnarFile(path).read(group, column)
    return _last[key]


@dataclass(frozen=True)
class ParquetReader(Reader):
    """Reads a run of one file's rows, a group at a time, and decodes each cell."""

    column: str  # the image column of this file

    #: Rows per decode call at most (the loader also caps it at the batch size).
    chunk_rows = 64

    def read(self, items: Sequence[Item], prep: Preprocess) -> Iterator[Row | Failure]:
        for group, run in groupby(items, lambda item: item.locator.group):
            run = list(run)
            try:
                array = _group(run[0].file, self.column, group)
            except (ColumnarError, OSError) as e:
                yield from (Failure(item.key, str(e)) for item in run)
                continue
            for item, data in zip(run, cells(array, [i.locator.row for i in run]), strict=True):
                yield bytes_row(item, "no image (null)" if data is None else data, prep)


def column_key(name: str, value: object, where: str) -> str:
    """The key of a row named by its `--key-column` value: '#', then the value with '#'
    doubled. No file's key starts with '#' (an absolute path, a URL), so an id equal to a
    photo's path names another row than the photo's. A NUL is refused: HDF5 and numpy
    strings end at one, so the stored key would lose it and resume would miss the row."""
    text = str(value)
    if "\x00" in text:
        raise Sapiens2Error(
            f"--key-column {name} holds {text!r} in {where}, with a NUL character, which no "
            "stored key keeps: remove it from the column, or leave --key-column out"
        )
    return "#" + file_key(text)


class ParquetSource(Source):
    """Each Parquet / Arrow IPC file gives one item per row (see the module doc)."""

    extensions = PARQUET_EXTENSIONS | ARROW_EXTENSIONS

    def __init__(self, image_column: str | None = None, key_column: str | None = None) -> None:
        self.image_column = image_column  # None: the only column whose type holds images
        self.key_column = key_column  # None: FILE#row=N
        self._keys: dict[str, str] = {}  # keys from the key column -> where seen

    def expand(self, files: Sequence[str]) -> Expansion:
        out = Expansion()
        for file in files:
            try:
                table = ColumnarFile(file)
                layout = table.layout()
            except ColumnarError as e:
                out.failures.append(Failure(file_key(file), str(e)))
                continue
            reader = ParquetReader(image_column(layout, file, self.image_column))
            keys = self._column_keys(table, layout) if self.key_column else None
            n = 0
            for group, rows in enumerate(layout.group_rows):
                for row in range(rows):
                    key = derived_key(file, f"row={n}") if keys is None else keys[n]
                    out.items.append(Item(key, file, reader, Cell(group, row)))
                    n += 1
        return out

    def _column_keys(self, table: ColumnarFile, layout: Layout) -> list[str]:
        """The key column's values as keys; raises Sapiens2Error on a missing column, a
        null or a repeated value (two rows under one key would overwrite each other)."""
        pa, name, file = pyarrow(), self.key_column, table.path
        kind = layout.types.get(name)
        if kind is None:
            raise Sapiens2Error(
                f"{file} has no column {name!r} (--key-column): it has "
                + ", ".join(map(repr, layout.types))
            )
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)) and not (
            pa.types.is_integer(kind)
        ):
            raise Sapiens2Error(f"--key-column {name} is {kind}: give a string or integer column")
        keys: list[str] = []
        for group in range(len(layout.group_rows)):
            try:
                values = table.read(group, name).to_pylist()
            except ColumnarError as e:
                raise Sapiens2Error(f"--key-column {name} of {file}: {e}") from None
            for value in values:
                if value is None:
                    raise Sapiens2Error(
                        f"--key-column {name} is null in row {len(keys)} of {file}: "
                        "every row needs a key"
                    )
                where = f"row {len(keys)} of {file}"
                key = column_key(name, value, where)
                if key in self._keys:
                    raise Sapiens2Error(
                        f"--key-column {name} repeats {value!r} ({self._keys[key]} and "
                        f"{where}): keys must be unique"
                    )
                self._keys[key] = where
                keys.append(key)
        return keys

    def settings(self) -> dict[str, object]:
        return {"image_column": self.image_column, "key_column": self.key_column}
