"""FeatureDataset: every row through DataLoader workers (fork and spawn), as written and as
open_features reads it; one reader per process; one-line refusals."""

from __future__ import annotations

import os
import pickle
import re

import numpy as np
import pytest
import torch
from paths import DOCS, TESTS
from test_writers import ROW, SETTINGS
from torch.utils.data import DataLoader

from sapiens2_cli import FeatureDataset
from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.output import RowBatch, open_features, open_writer
from sapiens2_cli.output import dataset as dataset_module
from sapiens2_cli.output.features import FeatureFile

DOC = DOCS / "api.md"
ROWS = 11


def write(path, fmt, batches) -> None:
    writer, _ = open_writer(path, fmt, SETTINGS, ROW, np.float16, shard_rows=3)
    for b in batches:
        writer.write(b)
    writer.close(complete=True)


@pytest.fixture(params=["h5", "npy"])
def out(request, tmp_path):
    """OUT with ROWS random rows (npy: shards of 3) and what was written, by key; `boxes`
    appears from row 4 on, so earlier rows hold its fill value (NaN)."""
    path = tmp_path / "feats.h5" if request.param == "h5" else tmp_path / "feats"
    rng = np.random.default_rng(0)
    features = rng.standard_normal((ROWS, *ROW)).astype(np.float16)
    sizes = rng.integers(1, 5000, (ROWS, 2)).astype(np.int32)
    boxes = rng.uniform(0, 100, (ROWS, 4)).astype(np.float32)
    boxes[:4] = np.nan
    keys = [f"/data/ünï {i}.jpg" for i in range(ROWS)]

    def rows(a: int, b: int) -> RowBatch:
        columns = {"original_size": sizes[a:b]}
        if a >= 4:
            columns["boxes"] = boxes[a:b]
        return RowBatch(keys[a:b], features[a:b], columns, [("/data/bad.jpg", "truncated")])

    write(path, request.param, [rows(0, 4), rows(4, 9), rows(9, ROWS)])
    written = {
        k: {"features": features[i].astype(np.float32), "original_size": sizes[i], "boxes": b}
        for i, (k, b) in enumerate(zip(keys, boxes, strict=True))
    }
    return path, written


def read_all(ds: FeatureDataset, **loader) -> dict[str, dict]:
    """Every item the loader gives, by key (each key once)."""
    got: dict[str, dict] = {}
    for batch in DataLoader(ds, batch_size=3, shuffle=True, **loader):
        for j, key in enumerate(batch["key"]):
            assert key not in got
            got[key] = {name: value[j].numpy() for name, value in batch.items() if name != "key"}
    return got


def check_rows(path, got: dict[str, dict], written: dict[str, dict]) -> None:
    """As written (numpy by hand) and as open_features reads each key's row."""
    assert sorted(got) == sorted(written)
    with open_features(path) as f:
        for i, key in enumerate(f.paths):
            assert got[key]["features"].dtype == np.float32
            np.testing.assert_array_equal(got[key]["features"], written[key]["features"])
            np.testing.assert_array_equal(got[key]["features"], f.read([i])[0])
            for name in ("original_size", "boxes"):
                np.testing.assert_array_equal(got[key][name], written[key][name])
                np.testing.assert_array_equal(got[key][name], f.column(name)[i])


def test_every_row_through_two_forked_workers(out):
    path, written = out
    ds = FeatureDataset(path, columns=["original_size", "boxes"])
    assert len(ds) == ROWS
    got = read_all(ds, num_workers=2, multiprocessing_context="fork")
    check_rows(path, got, written)


@pytest.mark.slow
def test_every_row_through_two_spawned_workers(out):
    path, written = out
    ds = FeatureDataset(path, columns=["original_size", "boxes"])
    ds[0]  # the parent holds a reader now; spawned workers must open their own
    got = read_all(ds, num_workers=2, multiprocessing_context="spawn")
    check_rows(path, got, written)


def test_workers_open_their_own_reader_after_fork(out, tmp_path, monkeypatch):
    """A reader the parent opened is not the workers': each opens one, once."""
    path, written = out
    log = tmp_path / "opened"
    real = dataset_module.open_features

    def recorded(where):
        with open(log, "a") as f:  # one line per open, from whichever process
            f.write(f"{os.getpid()}\n")
        return real(where)

    monkeypatch.setattr(dataset_module, "open_features", recorded)
    ds = FeatureDataset(path)
    ds[0]
    got = read_all(ds, num_workers=2, multiprocessing_context="fork")
    assert sorted(got) == sorted(written)
    workers = [int(p) for p in log.read_text().split() if int(p) != os.getpid()]
    assert len(workers) == len(set(workers)) == 2


def test_pickles_without_its_reader(out):
    """What a spawned worker receives holds no open file; it opens its own on first use."""
    path, _ = out
    ds = FeatureDataset(path, columns=["original_size"])
    first = ds[0]
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._file is None and ds._file is not None
    again = clone[0]
    assert again["key"] == first["key"] and torch.equal(again["features"], first["features"])


def test_values_come_from_the_readers_row_read(out, monkeypatch):
    """One row per read, through FeatureFile.read: what the reader decodes (a later storage
    dtype's dequantization included) is what training gets."""
    path, written = out
    calls = []
    real = FeatureFile.read

    def doubled(self, rows):
        calls.append(list(rows))
        return real(self, rows) * 2

    monkeypatch.setattr(FeatureFile, "read", doubled)
    ds = FeatureDataset(path)
    item = ds[5]
    assert calls == [[5]]
    np.testing.assert_array_equal(item["features"].numpy(), 2 * written[item["key"]]["features"])


def test_dtype_on_request(out):
    path, written = out
    item = FeatureDataset(path, dtype=torch.float16)[3]
    assert item["features"].dtype == torch.float16
    np.testing.assert_array_equal(item["features"].numpy(), written[item["key"]]["features"])
    with pytest.raises(IndexError):
        FeatureDataset(path)[ROWS]


def one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_missing_output_is_one_line(tmp_path):
    with pytest.raises(Sapiens2Error) as e:
        FeatureDataset(tmp_path / "nothing.h5")
    assert "does not exist" in one_line(e)


@pytest.mark.parametrize("fmt", ["h5", "npy"])
def test_output_of_failures_only_is_one_line(tmp_path, fmt):
    path = tmp_path / ("feats.h5" if fmt == "h5" else "feats")
    write(path, fmt, [RowBatch([], None, failures=[("/data/a.jpg", "not an image")])])
    with pytest.raises(Sapiens2Error) as e:
        FeatureDataset(path)
    assert "no rows" in one_line(e) and "/data/a.jpg: not an image" in one_line(e)


def test_unknown_column_is_one_line(out):
    path, _ = out
    with pytest.raises(Sapiens2Error) as e:
        FeatureDataset(path, columns=["original_size", "crop_affine"])
    assert "'crop_affine'" in one_line(e) and "boxes" in one_line(e)


@pytest.mark.slow
def test_api_example_runs_as_written(tmp_path, monkeypatch, capsys):
    """docs/api.md's training example: an extract, then two workers over its rows."""
    text = DOC.read_text()
    example = re.search(r"## Reading back for training.*?```python\n(.*?)```", text, re.S)[1]
    (tmp_path / "tests").symlink_to(TESTS)  # the example's relative paths
    monkeypatch.chdir(tmp_path)
    exec(compile(example, str(DOC), "exec"), {})
    assert "4 torch.Size([2, 1, 12, 32]) torch.int32" in capsys.readouterr().out
