"""What the Ray engine's tests share: a real Ray cluster on 127.0.0.1 (two CPUs, no
dashboard), inputs of every kind, and outputs compared by key with the local engine's."""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from extract_helpers import FAST, FP32, extract
from media import make_tar, make_video, webdataset_members
from paths import DATA
from PIL import Image

from sapiens2_cli.output import open_features

ray = pytest.importorskip("ray")

#: Where every Ray instance of the tests listens.
LOOPBACK = "127.0.0.1"
#: The flags of every Ray test run: the tiny weights, small images, float32.
RAY = ["--engine", "ray", *FAST, *FP32]
LOCAL = [*FAST, *FP32]


@contextlib.contextmanager
def local_ray(**env: str) -> Iterator[str]:
    """A Ray instance on this machine for the test (2 CPUs; `env` set in its workers);
    yields the address other drivers join it at, and stops it after."""
    context = ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        logging_level=logging.ERROR,
        runtime_env={"env_vars": env} if env else None,
    )
    try:
        yield context.address_info["gcs_address"]
    finally:
        ray.shutdown()


def make_inputs(root: Path, generated: int = 12) -> Path:
    """Photos, generated images of several sizes, a broken file, a clip, two tar shards
    and a Parquet file with a corrupt cell: every local input kind in one folder."""
    root.mkdir(parents=True)
    for name in ("astronaut.png", "chelsea.jpg", "coffee.jpg"):
        shutil.copy(DATA / name, root / name)
    rng = np.random.default_rng(3)
    for i in range(generated):
        h, w = rng.integers(24, 96, 2)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), np.uint8)).save(root / f"g{i:03d}.png")
    (root / "broken.jpg").write_bytes(b"not an image")
    make_video(root / "clip.mp4")
    make_tar(root / "00000.tar", webdataset_members(3))
    make_tar(root / "00001.tar", webdataset_members(2))
    _parquet(root / "table.parquet")
    return root.resolve()


def _parquet(path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    cells = [(DATA / "coffee.jpg").read_bytes(), b"corrupt", (DATA / "chelsea.jpg").read_bytes()]
    pq.write_table(pa.table({"image": pa.array(cells, pa.binary())}), path, row_group_size=2)


def run(*args) -> None:
    """The command in this process; it must succeed."""
    result = extract(*map(str, args))
    assert result.exit_code == 0, result.output


def by_key(out) -> tuple[dict, dict, dict, dict]:
    """({key: features}, {key: {column: value}}, {key: reason}, settings) of a complete
    output, each key once."""
    with open_features(out) as f:
        assert len(set(f.paths)) == len(f.paths), "a row appears twice"
        assert f.settings["complete"] is True
        features = dict(zip(f.paths, f.read_raw(slice(None))[0], strict=True))
        scales = f.read_raw(slice(None))[1]
        columns = {
            key: {name: f.column(name)[i] for name in f.columns} for i, key in enumerate(f.paths)
        }
        if scales is not None:
            for i, key in enumerate(f.paths):
                columns[key]["scales"] = scales[i]
        return features, columns, dict(f.failed), dict(f.settings)


def assert_same_rows(ray_out, local_out) -> None:
    """The same keys with bit-identical rows, columns and failure records; the settings
    equal but for what only a run's place and time make differ."""
    features, columns, failed, settings = by_key(ray_out)
    want_features, want_columns, want_failed, want_settings = by_key(local_out)
    assert sorted(features) == sorted(want_features)
    for key, row in want_features.items():
        assert features[key].dtype == row.dtype
        np.testing.assert_array_equal(features[key], row, err_msg=key)
        for name, value in want_columns[key].items():
            np.testing.assert_array_equal(columns[key][name], value, err_msg=f"{key} {name}")
    assert failed == want_failed
    assert failed, "the inputs hold a broken file, which must be a failure record"
    differs = {k for k in settings.keys() | want_settings.keys() if k != "reductions"}
    assert {k: settings.get(k) for k in differs} == {k: want_settings.get(k) for k in differs}
