"""Parquet and Arrow IPC inputs: the image column found by type, rows read by group, keys,
nulls and corrupt cells as per-row failures, bad input refused, and the rows through
`extract`, resume, --shard / merge and viz as the same bytes in loose files go.

The files are made here with pyarrow from the real photos in tests/data, in the two
layouts datasets use: a struct {bytes, path} (Hugging Face `Image`) and a plain binary one.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc
import pyarrow.parquet as pq
import pytest
from extract_helpers import FAST, FP32, extract, sapiens2, summary
from paths import DATA, PHOTOS, copy_photos

from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.inputs.decode import decode_image
from sapiens2_cli.inputs.items import Failure, Preprocess, Row
from sapiens2_cli.inputs.tables import columnar, parquet
from sapiens2_cli.inputs.tables.parquet import ParquetSource
from sapiens2_cli.output import open_features
from sapiens2_cli.viz.inputs import InputImages

#: The runs through extract here: float32 features, one image a batch (rows compare exactly).
EXACT = [*FAST, *FP32, "--dtype", "float32", "--batch-size", "1"]
SIZE = (64, 48)
#: Six rows: the four photos, a null and a corrupt image (a JPEG cut short).
CELLS = [(DATA / p).read_bytes() for p in PHOTOS] + [
    None,
    (DATA / "chelsea.jpg").read_bytes()[:300],
]


def table(layout: str, cells=CELLS, **more) -> pa.Table:
    """An image column named `image` in `layout` (struct or binary), plus `more` columns."""
    if layout == "struct":
        kind = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
        values = [
            None if c is None else {"bytes": c, "path": f"{i}.jpg"} for i, c in enumerate(cells)
        ]
        column = pa.array(values, kind)
    else:
        column = pa.array(cells, pa.binary())
    return pa.table({"image": column, **{k: pa.array(v) for k, v in more.items()}})


def write(path: Path, data: pa.Table, rows_per_group: int = 4) -> Path:
    """A Parquet file in row groups, or an Arrow IPC file in record batches, of that size."""
    if path.suffix == ".parquet":
        pq.write_table(data, path, row_group_size=rows_per_group)
    else:
        with pa.ipc.new_file(path, data.schema) as out:
            for batch in data.to_batches(max_chunksize=rows_per_group):
                out.write_batch(batch)
    return path


def read_all(path: Path, **source) -> list[Row | Failure]:
    items = ParquetSource(**source).expand([str(path)]).items
    return [r for i in items for r in i.reader.read([i], Preprocess(SIZE))]


@pytest.mark.parametrize("name", ["t.parquet", "t.arrow", "t.feather"])
@pytest.mark.parametrize("layout", ["struct", "binary"])
def test_each_row_is_its_bytes_decoded_and_nulls_and_corrupt_rows_fail(tmp_path, layout, name):
    # Two rows a group, so rows come from three groups. Catches: the column not found by
    # type in either layout, rows of a later group read from the first (a wrong locator),
    # a null read as empty bytes or crashing the unit, a corrupt image not a failure.
    path = write(tmp_path / name, table(layout, labels=list("abcdef")), rows_per_group=2)
    found = ParquetSource().expand([str(path)])
    assert [i.key for i in found.items] == [f"{path}#row={n}" for n in range(6)]
    assert [(i.locator.group, i.locator.row) for i in found.items][3:] == [(1, 1), (2, 0), (2, 1)]
    results = read_all(path)
    for result, cell in zip(results[:4], CELLS, strict=False):
        assert isinstance(result, Row)
        np.testing.assert_array_equal(result.pixels, decode_image(cell, SIZE).pixels)
    assert [type(r) for r in results[4:]] == [Failure, Failure]
    assert results[4].reason == "no image (null)"
    assert results[5].reason.startswith("truncated or corrupt image")


def test_a_run_of_rows_reads_each_group_once(tmp_path, monkeypatch):
    # Catches: a group read again for every run of rows (a row group is hundreds of
    # images, a run at most 64).
    path = write(tmp_path / "t.parquet", table("binary", CELLS[:4]), rows_per_group=2)
    reads = []
    real = columnar.ColumnarFile.read
    monkeypatch.setattr(columnar.ColumnarFile, "read", lambda *a: reads.append(a[1:]) or real(*a))
    items = ParquetSource().expand([str(path)]).items
    rows = [r for i in items for r in i.reader.read([i], Preprocess(SIZE))]  # runs of one
    assert len(rows) == 4 and reads == [(0, "image"), (1, "image")]


def test_image_and_key_columns_chosen_by_name(tmp_path):
    # Catches: --image-column ignored (the first image column taken), key values not used.
    data = table("binary", CELLS[:2], thumb=[b"x", b"y"], id=["p#1", "p2"])
    path = write(tmp_path / "t.parquet", data)
    found = ParquetSource("image", "id").expand([str(path)])
    assert [i.key for i in found.items] == ["#p##1", "#p2"]  # "#", then "#" doubled
    rows = read_all(path, image_column="image")
    np.testing.assert_array_equal(rows[1].pixels, decode_image(CELLS[1], SIZE).pixels)


@pytest.mark.parametrize(
    ("more", "source", "message"),
    [
        ({"n": [1, 2]}, {}, "has no image column"),
        ({"thumb": [b"x", b"y"]}, {}, "several image columns ('image', 'thumb')"),
        ({}, {"image_column": "img"}, "no column 'img' (--image-column)"),
        ({"n": [1, 2]}, {"image_column": "n"}, "--image-column n in"),
        ({}, {"key_column": "id"}, "no column 'id' (--key-column)"),
        ({"id": ["a", "a"]}, {"key_column": "id"}, "--key-column id repeats 'a'"),
        ({"id": ["a", None]}, {"key_column": "id"}, "--key-column id is null in row 1"),
    ],
)
def test_bad_columns_are_one_line_before_any_work(tmp_path, more, source, message):
    # Catches: a file without images giving zero rows silently, a guess between two image
    # columns, keys that collide (rows overwritten) or are missing.
    data = table("binary", CELLS[:2], **more)
    if "n" in more and not source:
        data = data.drop_columns(["image"])
    path = write(tmp_path / "t.parquet", data)
    with pytest.raises(Sapiens2Error) as refused:
        ParquetSource(**source).expand([str(path)])
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_a_repeated_key_across_files_is_refused(tmp_path):
    a = write(tmp_path / "a.parquet", table("binary", CELLS[:1], id=["x"]))
    b = write(tmp_path / "b.parquet", table("binary", CELLS[1:2], id=["x"]))
    with pytest.raises(Sapiens2Error, match=f"repeats 'x' \\(row 0 of {a} and row 0 of {b}\\)"):
        ParquetSource(key_column="id").expand([str(a), str(b)])


def test_a_file_that_is_not_parquet_is_a_failure_record(tmp_path):
    # Catches: a damaged file stopping the run, or vanishing without a record.
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"not parquet" * 10)
    found = ParquetSource().expand([str(path)])
    assert found.items == [] and found.failures[0].key == str(path)
    assert found.failures[0].reason.startswith("not a Parquet file")


def test_without_pyarrow_the_extra_is_named(monkeypatch):
    # Catches: an ImportError traceback instead of what to install.
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(Sapiens2Error, match=r"pip install 'sapiens2-cli\[parquet\]'"):
        columnar.pyarrow()


def rows_by_key(out: Path) -> dict[str, np.ndarray]:
    with open_features(out) as f:
        return dict(zip(f.paths, f.read(slice(None)), strict=True))


def loose_copies(folder: Path) -> list[Path]:
    """The test photos as files 0.png, 1.jpg, ... in `folder`: CELLS[n] is file n."""
    copy_photos(folder, {f"{n}{Path(p).suffix}": p for n, p in enumerate(PHOTOS)})
    return sorted(folder.iterdir())


@pytest.mark.parametrize("layout", ["struct", "binary"])
def test_a_rows_features_equal_the_same_bytes_as_a_loose_file(tmp_path, layout):
    # Same run, so the same model and batches of one. Catches: pixels of a row that differ
    # from the file's (another decoder, EXIF or the struct's path read as the image).
    tmp = tmp_path.resolve()
    path = write(tmp / "t.parquet", table(layout), rows_per_group=4)
    loose = loose_copies(tmp / "loose")
    done = summary(path, *loose, "-o", tmp / "f.h5", *EXACT)
    assert (done["images"], done["failed_total"]) == (8, 2)
    got = rows_by_key(tmp / "f.h5")
    for n, file in enumerate(loose):
        np.testing.assert_array_equal(got[f"{path}#row={n}"], got[str(file)])
    with open_features(tmp / "f.h5") as f:
        assert dict(f.failed)[f"{path}#row=4"] == "no image (null)"


def test_a_resume_inside_a_file_reads_only_the_rows_not_done(tmp_path, monkeypatch):
    # The first run fails rows 1 and 3 (as a crash in their decode would); the second reads
    # those alone. Catches: done rows read again (rows twice), the pending rows' cells taken
    # from the wrong group once the done ones are skipped.
    tmp = tmp_path.resolve()
    path = write(tmp / "t.parquet", table("binary", CELLS[:4]), rows_per_group=2)
    real = parquet.bytes_row
    failing = {f"{path}#row=1", f"{path}#row=3"}

    def injected(item, data, prep):
        return Failure(item.key, "injected") if item.key in failing else real(item, data, prep)

    monkeypatch.setattr(parquet, "bytes_row", injected)
    first = summary(path, "-o", tmp / "f.h5", *EXACT)
    assert (first["images"], first["failed_total"]) == (2, 2)
    read = []
    monkeypatch.setattr(parquet, "bytes_row", lambda i, d, p: read.append(i.key) or real(i, d, p))
    second = summary(path, "-o", tmp / "f.h5", *EXACT)
    assert (second["skipped"], second["images"]) == (2, 2)
    assert read == sorted(failing)
    loose = loose_copies(tmp / "loose")
    summary(*loose, "-o", tmp / "loose.h5", *EXACT)
    got, want = rows_by_key(tmp / "f.h5"), rows_by_key(tmp / "loose.h5")
    for n, file in enumerate(loose):
        np.testing.assert_array_equal(got[f"{path}#row={n}"], want[str(file)])


def test_parts_keep_a_files_rows_together_and_merge_to_one_run(tmp_path):
    # Catches: a file's rows split between parts (each part would read every group), rows
    # lost or repeated by the merge, --key-column keys not surviving the parts.
    tmp = tmp_path.resolve()
    files = [
        write(tmp / f"{k}.parquet", table("binary", CELLS[:4], id=[f"{k}-{n}" for n in range(4)]))
        for k in range(4)
    ]
    summary(*files, "-o", tmp / "one.h5", "--key-column", "id", *EXACT)
    for i in range(2):
        summary(*files, "-o", tmp / "f.h5", "--key-column", "id", "--shard", f"{i}/2", *EXACT)
    for i in range(2):
        with open_features(tmp / f"f.h5.parts/part-0000{i}-of-00002.h5") as f:
            ids = {key.split("-")[0] for key in f.paths}
            assert all(sum(k.startswith(f"{file}-") for k in f.paths) == 4 for file in ids)
    result = sapiens2("merge", "-o", tmp / "f.h5")
    assert result.exit_code == 0, result.output
    merged, single = rows_by_key(tmp / "f.h5"), rows_by_key(tmp / "one.h5")
    assert (
        sorted(merged) == sorted(single) == sorted(f"#{k}-{n}" for k in range(4) for n in range(4))
    )
    for key, row in single.items():
        np.testing.assert_array_equal(merged[key], row)


def test_bad_input_through_extract_is_one_line_and_writes_nothing(tmp_path, monkeypatch):
    # Catches: the refusal after OUT was created (an empty output left behind), a traceback.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = write(tmp_path / "t.parquet", table("binary", CELLS[:2], id=["a", "a"]))
    result = extract(path, "-o", tmp_path / "f.h5", *FAST, "--key-column", "id")
    assert isinstance(result.exception, Sapiens2Error) and "repeats 'a'" in str(result.exception)
    assert not (tmp_path / "f.h5").exists()


def test_viz_reads_a_row_as_extract_did(tmp_path):
    # Catches: a row's key looked up as a file ('#row=0' in its name), another row drawn.
    path = write(tmp_path / "t.parquet", table("struct", CELLS[:4]), rows_per_group=2)
    inputs = InputImages(None, 1.0)
    for n in (0, 3):
        shown = inputs.read(f"{path}#row={n}", (40, 30)).pixels
        np.testing.assert_array_equal(shown, decode_image(CELLS[n], (40, 30)).pixels)


def test_a_resume_takes_outs_key_column_and_refuses_another(tmp_path):
    # Catches: a resume without --key-column keying rows FILE#row=N (every row twice), or
    # one with another key column mixing two kinds of keys in OUT.
    path = write(tmp_path / "t.parquet", table("binary", CELLS[:2], id=["a", "b"], o=["c", "d"]))
    summary(path, "-o", tmp_path / "f.h5", "--key-column", "id", *EXACT)
    again = summary(path, "-o", tmp_path / "f.h5", *EXACT)
    assert (again["skipped"], again["images"]) == (2, 0)
    result = extract(path, "-o", tmp_path / "f.h5", *FAST, "--key-column", "o")
    assert "--key-column (key_column is 'id' there, 'o' now)" in str(result.exception)
