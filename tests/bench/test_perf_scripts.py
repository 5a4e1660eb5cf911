"""The performance scripts run end to end on the tiny weights (CPU)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from paths import DATA, ROOT, TINY

SCRIPTS = ROOT / "scripts"


def _run(script: str, *args: str) -> dict:
    command = [sys.executable, str(SCRIPTS / script), *map(str, args), "--json"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.slow
def test_upstream_style_comparison_reports_both_speeds_and_the_ratio():
    flags = ["--size", "64x48", "--batch-size", "2", "--device", "cpu", "--workers", "0"]
    report = _run("bench_upstream_style.py", DATA, "--checkpoint", TINY, *flags)
    tool, loop = report["tool"], report["upstream_style"]
    assert tool["images"] == loop["images"] == 4 and tool["batch_size"] == 2
    assert report["ratio"] == pytest.approx(tool["images_per_s"] / loop["images_per_s"])
    assert report["environment"]["device"] == "cpu"


@pytest.mark.slow
def test_weights_dtype_check_holds_the_tolerance_on_the_tiny_weights():
    flags = ["--size", "128x96", "--layers", "8,17", "--device", "cpu"]
    report = _run("check_weights_dtype.py", DATA, "--checkpoint", TINY, *flags)
    assert report["within_tolerance"] and len(report["cosine_per_image"]) == 4


def test_writer_bench_reports_each_writer_against_the_plain_write(tmp_path):
    flags = ["--gb", "0.0005", "--row-shape", "1,32,32", "--batch", "4", "--repeats", "2"]
    report = _run("bench_writers.py", *flags, "--dir", tmp_path)
    assert report["rows"] == 248 and report["gigabytes"] == 248 * 32 * 32 * 2 / 1e9
    rates = report["gb_per_s"]
    assert set(rates) == {"plain", "h5", "npy"} and all(len(r) == 2 for r in rates.values())
    for fmt in ("h5", "npy"):
        ratios = [rate / plain for rate, plain in zip(rates[fmt], rates["plain"], strict=True)]
        assert report["ratio"][fmt] == pytest.approx(ratios)
    assert not list(tmp_path.iterdir())  # every output deleted


@pytest.mark.slow
def test_object_store_bench_lists_every_object_and_reads_both_ways():
    report = _run("bench_object_store.py", "--objects", 30, "--count", 4, "--repeats", 1)
    assert report["listing"]["objects"] == 30
    assert set(report["reading"]) == {"local files", "s3 (moto)"}
    assert all(r["images"] == 4 and r["reader_mb_per_s"] > 0 for r in report["reading"].values())


@pytest.mark.slow
def test_reduction_fidelity_table_on_the_tiny_weights():
    report = _run("reduction_fidelity.py", DATA, "--checkpoint", TINY, "--size", "64x64", "-k", 8)
    rows = {r["option"]: r for r in report["rows"]}
    d, tokens = 32, 16  # the tiny weights' width; a 4x4 grid
    want = {"float32": tokens * d * 4, "float16": tokens * d * 2, "int8": tokens * (d + 2),
            "pool 2": tokens // 4 * d * 2, "PCA 8": tokens * 8 * 2, "PCA 8 + int8": tokens * 10,
            "pool 2 + PCA 8 + int8": tokens // 4 * 10}  # fmt: skip
    assert {name: r["bytes_per_image"] for name, r in rows.items()} == want
    assert rows["float32"]["relative_error_max"] == 0
    assert rows["float32"]["cosine_min"] == pytest.approx(1, abs=1e-12)
    assert 0 < rows["float16"]["relative_error_mean"] < 1e-3
    assert 0 < rows["int8"]["relative_error_mean"] < 0.02
    # PCA's error is the variance it drops: at least that of the fit rows, roughly
    kept = report["pca_variance_kept_fit"]
    assert rows["PCA 8"]["relative_error_mean"] > 0.5 * (1 - kept) ** 0.5
    assert rows["pool 2 + PCA 8 + int8"]["smaller_than_float16"] == pytest.approx(25.6)
