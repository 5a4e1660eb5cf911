"""`sapiens2 viz` end to end: features extracted from real photos with the tiny weights."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from extract_helpers import extract, sapiens2, sapiens2_subprocess
from media import index_of, make_tar, make_video, plain_decode, webdataset_members
from paths import DATA, TINY, copy_photos
from PIL import Image

from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.inputs.decode import decode_image
from sapiens2_cli.output import RowBatch, open_features, open_writer
from sapiens2_cli.output.rows import FORMAT_VERSION
from sapiens2_cli.viz.patches import grid_spec
from sapiens2_cli.viz.render import panel_size
from sapiens2_cli.viz.run import JOINT_IMAGES, joint_sample

PHOTOS = ["a/astronaut.png", "a/chelsea.jpg", "a/coffee.jpg", "b/chelsea.jpg"]  # sorted
NAMES = ["0_astronaut.png", "1_chelsea.png", "2_coffee.png", "3_chelsea.png"]
SIDE = 64  # --long-side in these tests: small pictures, quick to write


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Real photos in two folders, with one basename in both."""
    return copy_photos(tmp_path_factory.mktemp("photos"), {n: Path(n).name for n in PHOTOS})


@pytest.fixture(scope="module")
def extracted(photos, tmp_path_factory):
    """Extract `photos` once per set of flags: {flags: output path}."""
    cache: dict[tuple[str, ...], Path] = {}

    def get(fmt: str, *flags: str) -> Path:
        key = (fmt, *flags)
        if key not in cache:
            out = tmp_path_factory.mktemp("feats") / ("f.h5" if fmt == "h5" else "f")
            args = ["--checkpoint", TINY, "--size", "128x96", "--workers", "0", "-q"]
            result = extract(photos, "-o", out, *args, *flags)
            assert result.exit_code == 0, result.output
            cache[key] = out
        return cache[key]

    return get


def run_json(*args: object) -> dict:
    """The JSON summary of `sapiens2 viz ARGS`, which must succeed."""
    result = sapiens2("viz", *args, "--json", "-q")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def pca_half(path: str, overlay: bool = True) -> np.ndarray:
    pixels = np.asarray(Image.open(path))
    return pixels[:, pixels.shape[1] // 2 :] if overlay else pixels


@pytest.mark.parametrize(
    ("fmt", "tokens", "layout", "resize"),
    [
        ("h5", "patch", "tokens", "stretch"),
        ("npy", "all", "tokens", "letterbox"),
        ("h5", "patch", "map", "letterbox"),
        ("npy", "patch", "map", "stretch"),
    ],
)
def test_pictures_have_the_original_aspect_and_a_contact_sheet(
    extracted, photos, tmp_path, fmt, tokens, layout, resize
):
    feats = extracted(fmt, "--tokens", tokens, "--layout", layout, "--resize", resize)
    out = tmp_path / "viz"
    summary = run_json(feats, "-o", out, "--overlay", "--grid", "--long-side", SIDE)
    assert summary["pictures"] == [str(out / n) for n in NAMES]  # duplicate basenames kept apart
    assert summary["missing_images"] == []
    for name, path in zip(PHOTOS, summary["pictures"], strict=True):
        with Image.open(photos / name) as photo:
            h, w = panel_size((photo.height, photo.width), SIDE)
        picture = Image.open(path)
        assert picture.size == (2 * w, h) and picture.mode == "RGB"
        shown = decode_image(str(photos / name), (h, w)).pixels
        np.testing.assert_array_equal(np.asarray(picture)[:, :w], shown)  # the photo, left
        assert np.asarray(picture)[:, w:].std() > 10  # the components show some structure
    sheet = Image.open(summary["grid"])
    assert summary["grid"] == str(out / "grid.png")
    assert sheet.height >= SIDE and sheet.width >= 2 * SIDE


def test_joint_colours_do_not_depend_on_the_images_drawn(extracted, photos, tmp_path):
    feats = extracted("h5", "--layers", "8,17")
    every = run_json(feats, "-o", tmp_path / "all", "--fit", "joint", "--long-side", SIDE)
    one = run_json(
        feats,
        "-o",
        tmp_path / "one",
        "--fit",
        "joint",
        "--long-side",
        SIDE,
        "--paths",
        photos / "a/coffee.jpg",
    )
    assert one["pictures"] == [str(tmp_path / "one" / NAMES[2])]
    coffee = np.asarray(Image.open(every["pictures"][2]))
    np.testing.assert_array_equal(np.asarray(Image.open(one["pictures"][0])), coffee)
    alone = run_json(feats, "-o", tmp_path / "alone", "--paths", photos / "a/coffee.jpg")
    assert not np.array_equal(np.asarray(Image.open(alone["pictures"][0])), coffee)


def test_the_joint_sample_is_bounded_and_spread_over_the_file(tmp_path, monkeypatch):
    n, grid, dim = 300, (6, 8), 4
    settings = {
        "arch": "custom",
        "checkpoint_sha256": "0",
        "image_size": [96, 128],
        "grid_size": list(grid),
        "embed_dim": dim,
        "resize": "stretch",
        "layers": [17],
        "tokens": "patch",
        "layout": "tokens",
        "dtype": "float32",
        "precision": "fp32",
        "format_version": FORMAT_VERSION,
    }
    row_shape = (1, grid[0] * grid[1], dim)
    writer, _ = open_writer(tmp_path / "f", "npy", settings, row_shape, np.dtype("float32"))
    features = np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None, None], (n, *row_shape))
    sizes = np.tile(np.array([[96, 128]], np.int32), (n, 1))
    writer.write(
        RowBatch([f"{i}.jpg" for i in range(n)], features.copy(), {"original_size": sizes})
    )
    writer.close(complete=True)
    with open_features(tmp_path / "f") as ff:
        spec = grid_spec(ff.settings, None, tmp_path / "f")
        x, border = joint_sample(ff, spec)
        rows = np.unique(x[:, 0].numpy())
        assert len(rows) == JOINT_IMAGES and rows[0] == 0 and rows[-1] == n - 1
        assert x.shape == (JOINT_IMAGES * 48, dim)  # every patch: under the bound
        assert border.sum() == JOINT_IMAGES * (2 * 6 + 2 * 8 - 4)
        monkeypatch.setattr("sapiens2_cli.viz.run.JOINT_VALUES", 10 * JOINT_IMAGES * dim)
        x, border = joint_sample(ff, spec)
        assert x.shape == (JOINT_IMAGES * 10, dim)  # 10 patches from each image
        assert len(np.unique(x[:, 0].numpy())) == JOINT_IMAGES
        again, _ = joint_sample(ff, spec)
        assert torch.equal(again, x)


def test_layer_components_and_foreground(extracted, tmp_path):
    feats = extracted("h5", "--layers", "8,17")
    last = run_json(feats, "-o", tmp_path / "last", "--images", 1, "--long-side", SIDE)
    eight = run_json(feats, "-o", tmp_path / "8", "--images", 1, "--layer", 8, "--long-side", SIDE)
    assert len(eight["pictures"]) == 1
    assert not np.array_equal(
        pca_half(last["pictures"][0], False), pca_half(eight["pictures"][0], False)
    )
    grey = run_json(feats, "-o", tmp_path / "grey", "--components", 1, "--long-side", SIDE)
    for path in grey["pictures"]:
        pixels = pca_half(path, False)
        assert (pixels == pixels[..., :1]).all()
    masked = run_json(
        feats, "-o", tmp_path / "fg", "--foreground-threshold", 0.5, "--long-side", SIDE
    )
    for path in masked["pictures"]:
        black = (pca_half(path, False) == 0).all(axis=-1)
        assert 0 < black.mean() < 1


def test_a_missing_image_gets_a_note_and_a_warning(photos, tmp_path, caplog):
    shutil.copytree(photos, tmp_path / "in")
    feats = tmp_path / "f.h5"
    extract(
        tmp_path / "in", "-o", feats, "--checkpoint", TINY, "--size", "64x48", "--workers", 0, "-q"
    )
    gone = tmp_path / "in" / "a" / "chelsea.jpg"
    gone.unlink()
    summary = run_json(feats, "-o", tmp_path / "viz", "--overlay", "--long-side", SIDE)
    assert summary["missing_images"] == [str(gone)]
    assert len(summary["pictures"]) == 4
    note = np.asarray(Image.open(summary["pictures"][1]))
    assert tuple(note[0, 0]) == (96, 96, 96)  # the grey note panel where the photo would be
    assert f"{gone}: file not found" in caplog.text


def test_overlay_draws_video_frames_and_tar_members(tmp_path):
    """Catches: a frame's or member's key read as a file ('file not found: …/clip.mp4#t=0.000',
    'Not a directory: …/000.tar/…'), another frame or member drawn than the row's, or a
    '#' in their folder's name (doubled in keys) looked up as stored."""
    root = tmp_path / "in#1"
    root.mkdir()
    clip = make_video(root / "clip.mp4")
    shard = make_tar(root / "000.tar", webdataset_members(2))  # astronaut.png, chelsea.jpg
    feats = tmp_path / "f.h5"
    args = ["--checkpoint", TINY, "--size", "64x48", "--workers", 0, "-q", "--fps", 0.5]
    assert extract(shard, clip, "-o", feats, *args).exit_code == 0
    summary = run_json(feats, "-o", tmp_path / "viz", "--overlay", "--long-side", 128)
    assert summary["missing_images"] == []
    names = ["0_000000000.png", "1_000000001.png", "2_clip_t_0.000.png", "3_clip_t_2.000.png"]
    assert [Path(p).name for p in summary["pictures"]] == names
    pictures = [np.asarray(Image.open(p)) for p in summary["pictures"]]
    left = [picture[:, : picture.shape[1] // 2] for picture in pictures]  # the input images
    np.testing.assert_array_equal(left[0], np.asarray(Image.open(DATA / "astronaut.png")))
    chelsea = Image.open(DATA / "chelsea.jpg")
    shown = decode_image(str(DATA / "chelsea.jpg"), panel_size(chelsea.size[::-1], 128)).pixels
    np.testing.assert_array_equal(left[1], shown)
    frames = plain_decode(clip)  # 96x128: the panel at --long-side 128 is the frame as is
    for panel, index in zip(left[2:], (0, 20), strict=True):
        assert index_of(panel) == index
        np.testing.assert_array_equal(panel, frames[index])


def test_images_are_found_from_anywhere_and_paths_by_any_spelling(photos, tmp_path, monkeypatch):
    """Catches: viz looking stored paths up from the current folder, or --paths matched
    only as typed (extract stores resolved paths)."""
    monkeypatch.chdir(photos)
    feats = tmp_path / "f.h5"
    extract("a", "-o", feats, "--checkpoint", TINY, "--size", "64x48", "--workers", 0, "-q")
    (tmp_path / "link").symlink_to(photos / "a")
    monkeypatch.chdir(tmp_path)
    found = run_json(feats, "-o", "v1", "--overlay", "--long-side", SIDE)
    assert found["missing_images"] == []
    by_spelling = run_json(
        feats, "-o", "v3", "--paths", "link/coffee.jpg", "--paths", "./link//astronaut.png"
    )
    assert [Path(p).name for p in by_spelling["pictures"]] == ["2_coffee.png", "0_astronaut.png"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--images", 2, "--paths", "x.jpg"], "give --images or --paths, not both"),
        (["--paths", "nowhere.jpg"], r"has no features for nowhere\.jpg: give --paths as stored"),
        (["--layer", 5], r"holds layer\(s\) 17, not 5: pick one with --layer"),
        (["--components", 2], "use 3 \\(RGB\\) or 1 \\(grey\\)"),
        (["--foreground-threshold", 1.5], "not between 0 and 1"),
        (["--fit", "global"], "unknown --fit .global.: use per-image, joint"),
        (["--images", 0], "give 1 or more"),
    ],
)
def test_bad_flags_are_one_clear_error(extracted, tmp_path, args, message):
    result = sapiens2("viz", extracted("h5"), "-o", tmp_path / "viz", *args)
    assert isinstance(result.exception, Sapiens2Error)
    assert result.exception.args[0].count("\n") == 0
    assert re.search(message, str(result.exception))
    assert not (tmp_path / "viz").exists()


def test_bad_inputs_are_one_clear_error(photos, tmp_path):
    (tmp_path / "in").mkdir()
    shutil.copy(DATA / "coffee.jpg", tmp_path / "in")
    (tmp_path / "in" / "broken.jpg").write_bytes(b"")
    pooled = tmp_path / "pooled.h5"
    fast = ["--checkpoint", TINY, "--size", "64x48", "--workers", 0, "-q"]
    extract(tmp_path / "in", "-o", pooled, *fast, "--tokens", "mean")
    cases = [
        ([pooled], r"holds pooled features \(--tokens mean\) with no patch grid"),
        ([DATA / "coffee.jpg"], "is not a sapiens2 extract output"),
        ([tmp_path / "nothing.h5"], "does not exist"),
    ]
    for args, message in cases:
        result = sapiens2("viz", *args, "-o", tmp_path / "viz")
        assert isinstance(result.exception, Sapiens2Error), result.output
        assert re.search(message, str(result.exception))
    patches = tmp_path / "patches.h5"
    extract(tmp_path / "in", "-o", patches, *fast)
    broken = tmp_path / "in" / "broken.jpg"
    result = sapiens2("viz", patches, "-o", tmp_path / "viz", "--paths", broken)
    assert "failed at extract (empty file (0 bytes))" in str(result.exception)


@pytest.mark.slow  # extracts, then a subprocess that imports torch
def test_the_command_line_prints_one_line(tmp_path):
    proc = sapiens2_subprocess("viz", tmp_path / "f.h5", "-o", tmp_path / "v")
    assert proc.returncode == 2 and proc.stdout == ""
    missing = tmp_path / "f.h5"
    assert proc.stderr == (
        f"error: {missing} does not exist: pass the -o path of a `sapiens2 extract` run\n"
    )
