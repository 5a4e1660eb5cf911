"""`sapiens2_cli.ray.FeatureExtractor` in a real Ray Data pipeline: for the same bytes, the
CLI's features (float32 bit for bit; int8 values and scales), and a bad row keeps its place."""

from __future__ import annotations

import numpy as np
import pytest
from paths import DATA, TINY
from ray_helpers import LOCAL, by_key, local_ray, ray, run

from sapiens2_cli.ray import FeatureExtractor

pytestmark = pytest.mark.slow
PHOTOS = ("astronaut.png", "chelsea.jpg", "coffee.jpg")


@pytest.fixture(scope="module")
def cluster():
    with local_ray() as address:
        yield address


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_features_of_a_bytes_column_equal_the_clis(cluster, tmp_path, dtype):
    """Catches: decoding or resizing bytes other than the CLI does, a reduction or the
    storage dtype applied differently, rows of a batch shuffled, a bad row dropped (every
    later row then paired with the wrong key)."""
    out = tmp_path / "cli"
    run(*(DATA / n for n in PHOTOS), "-o", out, *LOCAL, "--dtype", dtype, "--layers", "8,17")
    features, columns, _, _ = by_key(out)
    rows = [{"key": n, "image": (DATA / n).read_bytes()} for n in PHOTOS]
    rows.insert(1, {"key": "bad", "image": b"not an image"})
    made = (
        ray.data.from_items(rows)
        .map_batches(
            FeatureExtractor,
            fn_constructor_kwargs={
                "checkpoint": TINY,
                "size": "64x48",
                "precision": "fp32",
                "layers": (8, 17),
                "dtype": dtype,
            },
            batch_size=2,
            compute=ray.data.ActorPoolStrategy(size=1),
        )
        .take_all()
    )
    assert [r["key"] for r in made] == ["astronaut.png", "bad", "chelsea.jpg", "coffee.jpg"]
    for row in made:
        if row["key"] == "bad":
            assert row["error"] and (dtype == "int8" or np.isnan(row["features"]).all())
            continue
        key = str(DATA / row["key"])
        assert row["error"] == ""
        np.testing.assert_array_equal(row["features"], features[key])
        if dtype == "int8":
            np.testing.assert_array_equal(row["scales"], columns[key]["scales"].astype(np.float32))
