"""Keys taken from a Parquet `--key-column`: they keep apart from every file's key (an id
column holding photos' paths names other rows than the photos), and a key no stored string
could keep (a NUL) is one line before any work."""

from __future__ import annotations

import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from extract_helpers import FAST, FP32, extract
from media import DATA, PHOTOS

from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.output import open_features

ARGS = [*FAST, *FP32, "--key-column", "id"]


def parquet(path, ids: list[str], photos=PHOTOS):
    cells = [(DATA / p).read_bytes() for p in reversed(photos[: len(ids)])]  # other images
    pq.write_table(pa.table({"image": pa.array(cells, pa.binary()), "id": ids}), path)
    return path


def rows(out) -> dict[str, np.ndarray]:
    with open_features(out) as f:
        assert len(set(f.paths)) == len(f.paths), "a key appears twice"
        return dict(zip(f.paths, f.read(slice(None)), strict=True))


def test_key_column_values_equal_to_files_keys_name_other_rows(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for p in PHOTOS:
        shutil.copy(DATA / p, photos / p)
    paths = sorted(str(p) for p in photos.iterdir())
    table = parquet(tmp_path / "t.parquet", paths)
    out = tmp_path / "f.h5"
    assert extract(table, *ARGS, "-o", out).exit_code == 0
    first = extract(photos, table, *ARGS, "-o", out, "--json")  # the files added
    assert first.exit_code == 0, first.output
    got = rows(out)
    assert len(got) == 2 * len(PHOTOS)
    alone = tmp_path / "alone.h5"
    assert extract(photos, *FAST, *FP32, "-o", alone).exit_code == 0
    for key, row in rows(alone).items():
        np.testing.assert_array_equal(got[key], row, err_msg=key)


@pytest.mark.parametrize("ids", [["zz\x00"], ["abc", "abc\x00"]], ids=["trailing", "twin"])
def test_a_key_column_value_with_a_nul_is_one_line_before_any_work(tmp_path, ids):
    table = parquet(tmp_path / "t.parquet", ids)
    result = extract(table, *ARGS, "-o", tmp_path / "f.h5")
    assert isinstance(result.exception, Sapiens2Error), result.output
    assert "NUL" in str(result.exception) and "\n" not in str(result.exception)
    assert not (tmp_path / "f.h5").exists()
