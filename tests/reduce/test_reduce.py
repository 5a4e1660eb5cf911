"""Reductions (docs/format.md#reductions): `--pool K` and `--dtype int8` on the tiny
weights, each checked against numpy computed here from an unreduced float32 run; their
recorded loss, resume, merge, viz and `sapiens2 info`."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from extract_helpers import FAST, FP32, extract, sapiens2
from paths import copy_photos

from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.output import open_features
from sapiens2_cli.reduce.cast import quantize_int8
from sapiens2_cli.reduce.losses import join_reductions, reductions_for
from sapiens2_cli.reduce.projection import Projection

SQUARE = ["--size", "64x64"]  # a 4x4 grid, which --pool 2 divides
GRID = (4, 4)
D = 32


#: Every extract here: float32 compute at 64x64 (the run must succeed: `check=True`).
FLAGS = [*FAST, *FP32, *SQUARE]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """The test photos, for the module: `plain` extracts them once."""
    return copy_photos(tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="module")
def plain(photos, tmp_path_factory) -> np.ndarray:
    """float32 rows of every token (`--tokens all`), layers 8 and 17: (n, 2, 9 + 16, D)."""
    out = tmp_path_factory.mktemp("plain") / "plain.h5"
    extract(photos, "-o", out, *FLAGS, "--tokens", "all", "--layers", "8,17",
            "--dtype", "float32", check=True)  # fmt: skip
    with open_features(out) as f:
        return f.read(slice(None))


def block_means(patches: np.ndarray, k: int) -> np.ndarray:
    """(..., h*w, D) -> (..., h/k * w/k, D): each k x k block's mean, by hand."""
    h, w = GRID
    grid = patches.reshape(*patches.shape[:-2], h, w, D).astype(np.float64)
    out = np.zeros((*patches.shape[:-2], h // k, w // k, D))
    for i in range(h // k):
        for j in range(w // k):
            out[..., i, j, :] = grid[..., i * k : i * k + k, j * k : j * k + k, :].mean((-3, -2))
    return out.reshape(*patches.shape[:-2], -1, D)


def test_pool_keeps_block_means_after_the_unpooled_prefix(photos, plain, tmp_path):
    extract(photos, "-o", tmp_path / "p.h5", *FLAGS, "--tokens", "all", "--layers", "8,17",
            "--dtype", "float32", "--pool", "2", check=True)  # fmt: skip
    with open_features(tmp_path / "p.h5") as f:
        got, settings = f.read(slice(None)), f.settings
    assert got.shape == (len(plain), 2, 9 + 4, D) and settings["pool"] == 2
    np.testing.assert_allclose(got[:, :, :9], plain[:, :, :9], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got[:, :, 9:], block_means(plain[:, :, 9:], 2), rtol=1e-5,
                               atol=1e-5)  # fmt: skip


def test_pool_map_layout_is_d_by_pooled_grid(photos, plain, tmp_path):
    extract(photos, "-o", tmp_path / "m", *FLAGS, "--layout", "map", "--layers", "17",
            "--dtype", "float32", "--pool", "2", check=True)  # fmt: skip
    with open_features(tmp_path / "m") as f:
        got = f.read(slice(None))
    want = block_means(plain[:, 1:, 9:], 2).reshape(len(plain), 1, 2, 2, D)
    assert got.shape == (len(plain), 1, D, 2, 2)
    np.testing.assert_allclose(got, want.transpose(0, 1, 4, 2, 3), rtol=1e-5, atol=1e-5)


def int8_by_hand(x: np.ndarray, scales: np.ndarray, q: np.ndarray) -> None:
    """What the format promises, checked per token against the float32 features x."""
    want_scale = np.abs(x).max(-1) / 127
    s = scales.astype(np.float64)
    assert (s >= want_scale).all()  # rounded up: no value needs more than 127
    assert (s <= want_scale * (1 + 2**-10) + 2**-24).all()  # by one float16 step at most
    err = np.abs(x - q * s[..., None])
    assert (err <= s[..., None] / 2 * (1 + 1e-6) + 1e-12).all()


def relative_errors(x: np.ndarray, value: np.ndarray) -> np.ndarray:
    """||x - value||_2 / ||x||_2 per token (last axis), in float64."""
    x = x.astype(np.float64)
    return np.linalg.norm(x - value, axis=-1) / np.linalg.norm(x, axis=-1)


@pytest.mark.parametrize("out", ["q.h5", "q"])
def test_int8_round_trip_and_recorded_loss(photos, plain, tmp_path, out):
    extract(photos, "-o", tmp_path / out, *FLAGS, "--tokens", "all", "--layers", "8,17",
            "--dtype", "int8", check=True)  # fmt: skip
    with open_features(tmp_path / out) as f:
        q, scales = f.read_raw(slice(None))
        values, record = f.read([2, 0]), f.reductions
    assert q.dtype == np.int8 and scales.dtype == np.float16 and scales.shape == q.shape[:-1]
    int8_by_hand(plain, scales, q.astype(np.float64))
    dequantized = q.astype(np.float32) * scales.astype(np.float32)[..., None]
    np.testing.assert_array_equal(values, dequantized[[2, 0]])  # read: float32 q * scale
    errors = relative_errors(plain, dequantized)
    loss = record["int8"]["loss"]
    assert loss["tokens"] == errors.size == len(plain) * 2 * 25
    assert loss["relative_error_mean"] == pytest.approx(errors.mean(), rel=1e-5)
    assert loss["relative_error_max"] == pytest.approx(errors.max(), rel=1e-5)
    assert 0 < errors.max() < 0.02


def test_an_all_zero_token_has_scale_and_values_zero():
    x = torch.tensor([[0.0, 0.0, 0.0], [1e-3, -2.0, 0.5]])
    q, scale, errors = quantize_int8(x, -1)
    assert scale.dtype == torch.float16 and scale[0] == 0 and (q[0] == 0).all()
    assert errors[0] == 0  # 0/0 counts as exact
    assert q[1].tolist() == [0, -127, 32]  # 0.5 / (2/127 rounded up) = 31.7


def test_a_resume_continues_the_loss_sums(photos, plain, tmp_path):
    out = tmp_path / "r.h5"
    first = sorted(photos.iterdir())[:2]
    extract(first[0], "-o", out, *FLAGS, "--dtype", "int8", "--layers", "17", check=True)
    extract(first[1], "-o", out, *FLAGS, check=True)  # resumes: settings from OUT
    extract(photos, "-o", out, *FLAGS, check=True)
    with open_features(out) as f:
        order = [sorted(p.name for p in photos.iterdir()).index(Path(k).name) for k in f.paths]
        loss = f.reductions["int8"]["loss"]
        x = plain[order][:, 1:, 9:]
        errors = relative_errors(x, f.read(slice(None)))
    assert loss["tokens"] == errors.size == len(plain) * 16
    assert loss["relative_error_sum"] == pytest.approx(errors.sum(), rel=1e-5)
    assert loss["relative_error_max"] == pytest.approx(errors.max(), rel=1e-5)


@pytest.mark.parametrize("fmt", ["h5", "npy"])
def test_parts_of_a_reduced_output_merge_both_ways(photos, tmp_path, fmt):
    out = tmp_path / ("f.h5" if fmt == "h5" else "f")
    reduced = ("--dtype", "int8", "--pool", "2", "--layout", "map")
    extract(photos, "-o", tmp_path / f"single.{fmt}", *FLAGS, *reduced, "--format", fmt, check=True)
    for i in range(2):
        extract(photos, "-o", out, *FLAGS, *reduced, "--shard", f"{i}/2", check=True)
    with open_features(tmp_path / f"single.{fmt}") as f:
        want = dict(zip(f.paths, f.read(slice(None)), strict=True))
        want_loss = f.reductions["int8"]["loss"]
    for mode in ("virtual", "copy"):
        merged = tmp_path / f"{mode}.{fmt}"
        result = sapiens2("merge", "-o", out, "--merge", mode)
        assert result.exit_code == 0, result.output
        if mode == "copy":  # self-contained: it moves alone
            shutil.move(out, merged)
        with open_features(merged if mode == "copy" else out) as f:
            raw, scales = f.read_raw(slice(None))
            assert raw.dtype == np.int8 and scales.shape == (len(want), 1, 2, 2)
            for key, row in zip(f.paths, f.read(slice(None)), strict=True):
                np.testing.assert_array_equal(row, want[key])
            loss = f.reductions["int8"]["loss"]
        assert loss["tokens"] == want_loss["tokens"]
        assert loss["relative_error_sum"] == pytest.approx(want_loss["relative_error_sum"])
        assert loss["relative_error_max"] == pytest.approx(want_loss["relative_error_max"])
        result = sapiens2("viz", merged if mode == "copy" else out, "-o", tmp_path / f"viz-{mode}")
        assert result.exit_code == 0, result.output


def test_merge_refuses_parts_with_other_reductions(photos, tmp_path):
    out = tmp_path / "f.h5"
    extract(photos, "-o", out, *FLAGS, "--dtype", "int8", "--shard", "0/2", check=True)
    extract(photos, "-o", out, *FLAGS, "--dtype", "float16", "--shard", "1/2", check=True)
    result = sapiens2("merge", "-o", out)
    assert result.exit_code != 0 and "--dtype" in str(result.exception)
    assert not out.exists()
    pooled, plain = reductions_for(2, "int8"), reductions_for(1, "int8")
    with pytest.raises(Sapiens2Error, match="other reductions"):
        join_reductions({"a": pooled, "b": plain})


def test_viz_draws_a_pooled_int8_output(photos, tmp_path):
    extract(photos, "-o", tmp_path / "p.h5", *FLAGS, "--dtype", "int8", "--pool", "2", check=True)
    result = sapiens2("viz", tmp_path / "p.h5", "-o", tmp_path / "v")
    assert result.exit_code == 0, str(result.exception)
    assert len(list((tmp_path / "v").glob("*.png"))) == len(list(photos.iterdir()))


def test_info_says_what_an_output_holds(photos, tmp_path):
    extract(photos, "-o", tmp_path / "i", *FLAGS, "--dtype", "int8", "--pool", "2",
            "--layers", "8,17", check=True)  # fmt: skip
    result = sapiens2("info", tmp_path / "i", "--json")
    info = json.loads(result.output)
    assert (info["rows"], info["failed"], info["complete"]) == (4, 0, True)
    assert info["bytes_per_row"] == 2 * 4 * D + 2 * 4 * 2  # int8 values, float16 scales
    assert info["settings"]["pool"] == 2 and info["reductions"]["pool"] == {"k": 2, "loss": None}
    assert info["reductions"]["int8"]["loss"]["tokens"] == 4 * 2 * 4
    text = sapiens2("info", tmp_path / "i").output
    assert "4 rows, 0 failed, complete" in text and "int8: norm=l2" in text
    assert "pool: k=2; loss: nothing measured" in text
    extract(photos, "-o", tmp_path / "plain.h5", *FLAGS, check=True)
    text = sapiens2("info", tmp_path / "plain.h5").output
    assert "reductions: none" in text and f"bytes per row: {16 * D * 2:,}" in text


@pytest.mark.parametrize(
    ("more", "message"),
    [
        (["--pool", "3"], "--pool 3 does not divide the 4x4 patch grid"),
        (["--pool", "0"], "--pool must be a whole number of at least 1"),
        (["--pool", "2", "--tokens", "cls"], "--pool pools the patch grid"),
        (["--dtype", "int8", "--dtype", "float16"], "give --dtype once"),
    ],
)
def test_bad_reductions_are_one_line_before_any_output(photos, tmp_path, more, message):
    result = extract(photos, "-o", tmp_path / "x.h5", *FAST, *SQUARE, *more)
    assert result.exit_code != 0 and message in str(result.exception)
    assert "\n" not in str(result.exception)
    assert not (tmp_path / "x.h5").exists()


def test_a_resume_with_another_pool_is_refused_and_keeps_the_rows(photos, tmp_path):
    out = tmp_path / "k.h5"
    extract(photos, "-o", out, *FLAGS, "--pool", "2", check=True)
    result = extract(photos, "-o", out, *FAST, *SQUARE, "--pool", "4")
    assert "--pool (pool is 2 there, 4 now)" in str(result.exception)
    with open_features(out) as f:
        assert len(f) == 4 and f.settings["pool"] == 2


@pytest.fixture(scope="module")
def projection(tmp_path_factory) -> tuple[Path, Projection]:
    """A random orthonormal 32 -> 8 projection, saved as `sapiens2 pca` would."""
    rng = np.random.default_rng(1)
    basis, _ = np.linalg.qr(rng.normal(size=(D, 8)))
    p = Projection(
        mean=rng.normal(size=D).astype(np.float32),
        components=basis.T.astype(np.float32),
        explained_variance=np.linspace(8.0, 1.0, 8),
        total_variance=50.0,
    )
    path = tmp_path_factory.mktemp("proj") / "p.safetensors"
    p.save(path)
    return path, dataclasses.replace(p, sha256=hashlib.sha256(path.read_bytes()).hexdigest())


@pytest.mark.parametrize("layout", ["tokens", "map"])
def test_pool_project_int8_together_equal_numpy(photos, plain, projection, tmp_path, layout):
    """pool -> project -> quantize, against numpy's of the unreduced float32 rows."""
    path, p = projection
    args = ("--layout", layout) if layout == "map" else ("--tokens", "all", "--layers", "8,17")
    extract(photos, "-o", tmp_path / "c", *FLAGS, *args, "--pool", "2", "--project", path,
            "--dtype", "int8", check=True)  # fmt: skip
    if layout == "map":  # (n, 1, D, 2, 2) stored; numpy works on (n, 1, 4 tokens, D)
        x = block_means(plain[:, 1:, 9:], 2)
    else:
        x = np.concatenate((plain[:, :, :9], block_means(plain[:, :, 9:], 2)), axis=2)
    mean = p.mean.astype(np.float64)
    y = (x - mean) @ p.components.T.astype(np.float64)  # (n, L, T, 8)
    with open_features(tmp_path / "c") as f:
        q, scales = f.read_raw(slice(None))
        record = f.reductions
    if layout == "map":
        assert q.shape == (len(plain), 1, 8, 2, 2)
        q, scales = q.reshape(*q.shape[:3], 4).swapaxes(2, 3), scales.reshape(len(plain), 1, 4)
    assert q.shape == y.shape
    # The device projects in float32: its y is numpy's to ~1e-5, then int8 within s/2.
    s = scales.astype(np.float64)
    assert (np.abs(y - q * s[..., None]) <= s[..., None] / 2 + 1e-4).all()
    np.testing.assert_allclose(s, np.abs(y).max(-1) / 127, rtol=2**-10, atol=1e-6)
    assert list(record) == ["pool", "pca", "int8"]
    pca = record["pca"]
    assert (pca["k"], pca["sha256"]) == (8, p.sha256)
    assert pca["loss"]["variance_kept_fit"] == pytest.approx(36 / 50)
    kept = np.sum(y**2) / np.sum((x - mean) ** 2)
    assert pca["loss"]["variance_kept_written"] == pytest.approx(kept, rel=1e-5)
    errors = relative_errors(y, q * s[..., None])
    assert record["int8"]["loss"]["tokens"] == errors.size
    assert record["int8"]["loss"]["relative_error_mean"] == pytest.approx(errors.mean(), rel=1e-3)
    info = sapiens2("info", tmp_path / "c").output
    assert "pool: k=2; loss: nothing measured" in info and "int8: norm=l2" in info
    assert f"pca: k=8, sha256={p.sha256}; loss: variance_kept_fit=0.72;" in info
    assert f"variance_kept_written={kept:.4g}" in info
