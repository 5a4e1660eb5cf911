"""Parquet / Arrow cells as `datasets` writes them: an Image cell with a path and no bytes, a
dictionary-encoded binary column."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from media import DATA, PHOTOS

from sapiens2_cli.inputs.items import Failure, Preprocess, Row
from sapiens2_cli.inputs.tables.parquet import ParquetSource

SIZE = (64, 48)


def read_all(path) -> list[Row | Failure]:
    items = ParquetSource().expand([str(path)]).items
    return [r for i in items for r in i.reader.read([i], Preprocess(SIZE))]


def test_an_image_cell_with_a_path_and_no_bytes_is_read_from_that_path(tmp_path, monkeypatch):
    # As `datasets` stores local images: {"bytes": None, "path": ...}, a relative path
    # opened from the current folder.
    monkeypatch.chdir(DATA)
    kind = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    values = [
        {"bytes": None, "path": str(DATA / PHOTOS[0])},
        {"bytes": None, "path": PHOTOS[1]},
        {"bytes": (DATA / PHOTOS[2]).read_bytes(), "path": "elsewhere.jpg"},
        {"bytes": None, "path": "missing.jpg"},
    ]
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"image": pa.array(values, kind)}), path)
    got = read_all(path)
    loose = [r for p in PHOTOS[:3] for r in read_loose(tmp_path, p)]
    for row, want in zip(got[:3], loose, strict=True):
        assert isinstance(row, Row), row
        assert (row.pixels == want.pixels).all()
    assert isinstance(got[3], Failure) and "missing.jpg" in got[3].reason


def read_loose(tmp_path, photo):
    one = tmp_path / f"{photo}.parquet"
    pq.write_table(pa.table({"image": pa.array([(DATA / photo).read_bytes()], pa.binary())}), one)
    return read_all(one)


@pytest.mark.parametrize("suffix", [".parquet", ".arrow"])
def test_a_dictionary_encoded_binary_column_is_read(tmp_path, suffix):
    cells = [(DATA / p).read_bytes() for p in (PHOTOS[0], PHOTOS[1], PHOTOS[0])]
    data = pa.table({"image": pa.array(cells, pa.binary()).dictionary_encode()})
    path = tmp_path / f"t{suffix}"
    if suffix == ".parquet":
        pq.write_table(data, path, use_dictionary=True)
    else:
        with pa.ipc.new_file(path, data.schema) as out:
            out.write_table(data)
    got = read_all(path)
    assert all(isinstance(r, Row) for r in got) and len(got) == 3
    assert (got[0].pixels == got[2].pixels).all()
