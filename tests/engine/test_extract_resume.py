"""`sapiens2 extract` resumed: what OUT supplies, what it refuses, unchanged when refused."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from extract_helpers import (
    FAST,
    extract,
)
from fake_hub import FakeHub, point_at
from paths import DATA, TINY, copy_photos

from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.output import open_features


def test_resume_skips_done_adds_new_and_retries_failures(tmp_path):
    src = copy_photos(tmp_path / "in", ["astronaut.png", "coffee.jpg"])
    (src / "broken.jpg").write_text("not yet a picture")
    out = tmp_path / "f.h5"
    assert extract(src, "-o", out, *FAST).exit_code == 0
    with open_features(out) as f:
        assert len(f) == 2 and [p for p, _ in f.failed] == [str(src / "broken.jpg")]
        first = f.read(slice(None))

    result = extract(src, "-o", out, *FAST, "--skip-failed", "--json")
    assert json.loads(result.stdout)["skipped"] == 3

    shutil.copy(DATA / "chelsea.jpg", src / "broken.jpg")  # fixed since
    shutil.copy(DATA / "hubble_deep_field.jpg", src / "new.jpg")  # added since
    summary = json.loads(extract(src, "-o", out, *FAST, "--json").stdout)
    assert (summary["images"], summary["failed"], summary["skipped"]) == (2, 0, 2)
    with open_features(out) as f:
        assert f.paths[2:] == [str(src / "broken.jpg"), str(src / "new.jpg")]
        assert f.failed == [] and f.settings["complete"] is True
        np.testing.assert_array_equal(f.read([0, 1]), first)  # earlier rows untouched

    result = extract(src, "-o", out, *FAST, "--tokens", "mean")
    assert isinstance(result.exception, Sapiens2Error)
    assert re.search(r"--tokens .*--overwrite", str(result.exception))
    assert extract(src, "-o", out, *FAST, "--tokens", "mean", "--overwrite").exit_code == 0


def test_a_resume_from_another_folder_finds_the_images_done(tmp_path, monkeypatch):
    """Catches: rows keyed by the path as typed, so `./photos` then `/abs/photos` (or a
    link to it) extract everything twice."""
    photos = copy_photos(tmp_path / "photos", ["coffee.jpg", "chelsea.jpg"])
    (tmp_path / "link").symlink_to(photos)
    out = tmp_path / "f.h5"
    monkeypatch.chdir(tmp_path)
    assert extract("./photos", "-o", out, *FAST).exit_code == 0
    monkeypatch.chdir(photos)
    for again in (str(photos), "..//link", "coffee.jpg"):
        summary = json.loads(extract(again, "-o", out, *FAST, "--json").stdout)
        assert summary["images"] == 0 and summary["skipped"] >= 1, again
    with open_features(out) as f:
        assert sorted(f.paths) == sorted(str(photos.resolve() / n) for n in os.listdir(photos))


def test_a_resume_takes_the_settings_it_was_not_given_from_out(tmp_path):
    """Catches: a resume without the original flags refused (or silently run with the
    defaults) instead of continuing the output as it was made."""
    src = copy_photos(tmp_path / "in", {"a.jpg": "coffee.jpg"})
    out = tmp_path / "f.h5"
    made = ["--layers", "3,-1", "--tokens", "mean", "--dtype", "float32"]
    assert extract(src, "-o", out, *FAST, *made).exit_code == 0
    shutil.copy(DATA / "chelsea.jpg", src / "b.jpg")
    result = extract(src, "-o", out, "--checkpoint", TINY, "--workers", "0", "-q", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["images"] == 1  # 64x48 from OUT, not the 1024x768 default
    with open_features(out) as f:
        assert f.settings["layers"] == [3, 17] and f.read([1]).shape == (1, 2, 32)


def _snapshot(out: Path) -> dict[str, bytes]:
    """Every byte of OUT (each file of an npy folder, by name) and what lies beside it."""
    files = sorted(out.iterdir()) if out.is_dir() else [out]
    beside = {f"beside/{p.name}": b"" for p in out.parent.iterdir()}
    return {**beside, **{p.name: p.read_bytes() for p in files}}


@pytest.mark.parametrize("fmt", ["h5", "npy"])
def test_a_refused_resume_leaves_out_byte_identical_and_asks_no_hub(tmp_path, monkeypatch, fmt):
    """Catches: a resume opening or changing OUT before its settings are all checked, and
    checks that need no weights waiting for the hub (a download of gigabytes online)."""
    photos = copy_photos(tmp_path / "photos", ["astronaut.png"])
    (tmp_path / "boxes.csv").write_text("path,x,y,w,h\nastronaut.png,10,5,85,123\n")
    (tmp_path / "other.csv").write_text("path,x,y,w,h\nastronaut.png,10,5,85,120\n")
    out = tmp_path / ("f.h5" if fmt == "h5" else "f")
    made = [photos, "-o", out, "--workers", "0", "-q", "--size", "64x48"]
    assert extract(*made, "--checkpoint", TINY, "--boxes", tmp_path / "boxes.csv").exit_code == 0
    before = _snapshot(out)
    refused = {  # (flags, what the one line names); --arch 0.1b: the weights from the hub
        "setting": (["--tokens", "mean"], "--tokens"),
        "box padding": (["--box-padding", "1.5"], "--box-padding"),
        "box file": (["--boxes", tmp_path / "other.csv"], "another box file"),
    }
    with FakeHub() as hub:
        point_at(monkeypatch, hub.endpoint, offline=False)
        for flags, message in refused.values():
            boxes = [] if "--boxes" in flags else ["--boxes", tmp_path / "boxes.csv"]
            result = extract(*made, "--arch", "0.1b", *boxes, *flags)
            assert isinstance(result.exception, Sapiens2Error), result.output
            assert message in str(result.exception)
            assert hub.requests == [], flags
            assert _snapshot(out) == before, flags
    # One that needs the weights (which block -1 is), so the local checkpoint is given.
    boxes = ["--boxes", tmp_path / "boxes.csv"]
    result = extract(*made, "--checkpoint", TINY, *boxes, "--layers", "3")
    assert "--layers" in str(result.exception)
    assert _snapshot(out) == before


def test_a_resume_with_precision_auto_keeps_outs_and_says_so(tmp_path, monkeypatch, caplog):
    """Catches: `--precision auto` resuming an fp32 output on a bf16 CPU refused (or run in
    bf16) where every other setting left out is taken from OUT, or taken silently."""
    monkeypatch.setattr("sapiens2_cli.engine.device.cpu_flags", lambda: {"flags", "amx_bf16"})
    src = copy_photos(tmp_path / "in", {"a.jpg": "coffee.jpg"})
    auto, out = tmp_path / "auto.h5", tmp_path / "f.h5"
    assert extract(src, "-o", auto, *FAST).exit_code == 0
    assert extract(src, "-o", out, *FAST, "--precision", "fp32").exit_code == 0
    shutil.copy(DATA / "chelsea.jpg", src / "b.jpg")
    with caplog.at_level(logging.WARNING):
        result = extract(src, "-o", out, *FAST, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["images"] == 1
    with open_features(auto) as f:
        assert f.settings["precision"] == "bf16"  # what auto means on this "CPU"
    with open_features(out) as f:
        assert (f.settings["precision"], f.settings["weights_dtype"]) == ("fp32", "fp32")
    assert "--precision auto: resuming with fp32, the precision OUT was made with" in caplog.text


def test_a_resume_takes_the_format_from_out_when_its_name_does_not_say(tmp_path):
    """Catches: `-o noext` made with --format h5, resumed without --format, refused as
    'holds h5 output but --format npy was asked for' when no format was asked for."""
    out = tmp_path / "noext"
    assert extract(DATA / "coffee.jpg", "-o", out, *FAST, "--format", "h5").exit_code == 0
    result = extract(DATA / "chelsea.jpg", "-o", out, *FAST)
    assert result.exit_code == 0, result.output
    assert out.is_file()
    with open_features(out) as f:
        assert len(f) == 2
