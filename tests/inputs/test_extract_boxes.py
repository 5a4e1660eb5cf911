"""`extract --boxes`: one row per person box, end to end on the test photos.

The tiny golden weights at 64x48; every feature compared is recomputed here from the
crop (crop_box on the EXIF-oriented photo) through the model, not read back from the tool.
"""

from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from docs_examples import examples, run_example
from extract_helpers import FAST, FP32, extract, extract_subprocess, sapiens2
from paths import DATA, TINY
from PIL import Image

from sapiens2_cli.inputs.boxes.box_file import Box
from sapiens2_cli.inputs.boxes.crop import crop_box, read_rgb
from sapiens2_cli.model import load_backbone, normalize_pixels
from sapiens2_cli.output import open_features
from sapiens2_cli.scaleout.part_job import part_index

SIZE = (64, 48)
BOXES = """path,x,y,w,h,score
astronaut.png,10,5,85,123,0.98
astronaut.png,60,40,20,25,0.6
astronaut.png,0,0,0,10,0.5
astronaut.png,500,0,10,10,0.5
chelsea.jpg,20,30,60,100,
missing.jpg,1,1,5,5,0.9
"""


@pytest.fixture
def photos(photos: Path) -> Path:
    """The test photos (tests/conftest.py), with boxes.csv beside their folder."""
    (photos.parent / "boxes.csv").write_text(BOXES)
    return photos


def boxed(photos: Path, out: Path, boxes: str = "boxes.csv") -> list:
    """extract's arguments for the photos' crops in the box file `boxes` beside them."""
    return [photos, "--boxes", photos.parent / boxes, "-o", out, *FAST]


def crop_features(path: Path, box: Box, padding: float = 1.25) -> np.ndarray:
    """The last block's patch tokens of one crop, computed directly in float32."""
    model = load_backbone(TINY)
    crop = crop_box(read_rgb(str(path)), box, SIZE, padding).pixels
    pixels = torch.from_numpy(crop.copy()).permute(2, 0, 1)[None]
    with torch.inference_mode():
        (out,) = model.forward_layers(normalize_pixels(pixels), [17])
    return out[0, 9:].numpy()  # (h*w, D): the patches after cls and 8 storage tokens


@pytest.mark.parametrize("fmt", ["h5", "npy"])
def test_one_row_per_box_with_its_columns_features_and_failures(photos, tmp_path, fmt):
    """Catches a box's row holding another crop, columns misaligned, a bad box or a missing
    image failing its neighbours, or failures keyed by image instead of box."""
    out = tmp_path / ("crops.h5" if fmt == "h5" else "crops")
    result = extract(*boxed(photos, out), *FP32)
    assert result.exit_code == 0, result.output
    astronaut, chelsea = (str((photos / n).resolve()) for n in ("astronaut.png", "chelsea.jpg"))
    with open_features(out) as f:
        assert f.paths == [f"{astronaut}#box=0", f"{astronaut}#box=1", f"{chelsea}#box=0"]
        cols = f.columns
        np.testing.assert_array_equal(cols["boxes"][1], [60, 40, 20, 25])
        assert cols["boxes"].dtype == np.float32 and cols["boxes"].shape == (3, 4)
        assert cols["box_ids"].tolist() == [0, 1, 0] and cols["box_ids"].dtype == np.int64
        assert cols["box_scores"][:2].tolist() == pytest.approx([0.98, 0.6])
        assert np.isnan(cols["box_scores"][2])  # no score in the file
        assert cols["original_size"].tolist() == [[128, 128], [128, 128], [120, 180]]
        assert cols["crop_affine"].shape == (3, 2, 3) and cols["crop_affine"].dtype == np.float32
        expected = crop_box(read_rgb(astronaut), Box(60.0, 40.0, 20.0, 25.0, 1), SIZE).affine
        np.testing.assert_array_equal(cols["crop_affine"][1], expected)
        for row, (path, box) in enumerate(
            [
                (astronaut, Box(10.0, 5.0, 85.0, 123.0, 0)),
                (astronaut, Box(60.0, 40.0, 20.0, 25.0, 1)),
                (chelsea, Box(20.0, 30.0, 60.0, 100.0, 0)),
            ]
        ):
            got = f.read([row])[0, 0].astype(np.float32)
            np.testing.assert_allclose(got, crop_features(Path(path), box), rtol=2e-3, atol=2e-3)
        failed = dict(f.failed)
        assert failed[f"{astronaut}#box=2"].startswith("box 2 has zero or negative size")
        assert "entirely outside the 128x128 image" in failed[f"{astronaut}#box=3"]
        missing = str(photos.resolve() / "missing.jpg")
        assert failed[f"{missing}#box=0"] == "file not found"
        assert len(failed) == 3
        settings = f.settings
    assert settings["boxes"] == "boxes.csv" and settings["box_padding"] == 1.25
    assert len(settings["boxes_sha256"]) == 64


def test_resume_goes_box_by_box(photos, tmp_path):
    """Catches a resume that redoes an image's boxes, or skips a box that failed before."""
    out = tmp_path / "crops.h5"
    assert extract(*boxed(photos, out)).exit_code == 0
    shutil.copy(DATA / "coffee.jpg", photos / "missing.jpg")  # the missing image appears
    result = extract(*boxed(photos, out), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert (summary["images"], summary["failed"], summary["skipped"]) == (1, 2, 3)
    with open_features(out) as f:
        assert len(f.paths) == len(set(f.paths)) == 4
        assert f.paths[-1].endswith("missing.jpg#box=0")
        assert sorted(k.rpartition("#")[2] for k, _ in f.failed) == ["box=2", "box=3"]
    result = extract(*boxed(photos, out), "--json", "--skip-failed")
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert (summary["images"], summary["failed"], summary["skipped"]) == (0, 0, 6)


def test_each_image_is_decoded_once_for_all_its_boxes(photos, tmp_path, monkeypatch):
    """Catches a reader that decodes the photo again for every box (--workers 0: in here)."""
    import sapiens2_cli.inputs.boxes.crop as crop

    opened: list[str] = []
    real = crop.read_rgb
    monkeypatch.setattr(crop, "read_rgb", lambda path: opened.append(path) or real(path))
    assert extract(*boxed(photos, tmp_path / "crops.h5")).exit_code == 0
    assert sorted(Path(p).name for p in opened) == ["astronaut.png", "chelsea.jpg", "missing.jpg"]


def test_padding_changes_the_crop(photos, tmp_path):
    out = tmp_path / "loose.h5"
    assert extract(*boxed(photos, out), "--box-padding", "2", *FP32).exit_code == 0
    with open_features(out) as f:
        assert f.settings["box_padding"] == 2.0
        got = f.read([0])[0, 0].astype(np.float32)
    box = Box(10.0, 5.0, 85.0, 123.0, 0)
    want = crop_features(photos / "astronaut.png", box, padding=2.0)
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-3)


def test_other_rows_cannot_share_an_output(photos, tmp_path):
    """Catches a resume that mixes whole images and crops, or crops of two box files or two
    paddings, in one output."""
    plain, crops = tmp_path / "plain.h5", tmp_path / "crops.h5"
    assert extract(photos, "-o", plain, *FAST).exit_code == 0
    assert extract(*boxed(photos, crops)).exit_code == 0
    (tmp_path / "other.csv").write_text("astronaut.png,1,2,30,40\n")
    cases = [
        (extract(*boxed(photos, plain)), "holds one row per image (made without --boxes)"),
        (extract(photos, "-o", crops, *FAST), "made with --boxes boxes.csv: pass that box file"),
        (extract(*boxed(photos, crops, "other.csv")), "another box file (boxes.csv"),
        (extract(*boxed(photos, crops), "--box-padding", "1.5"), "--box-padding"),
    ]
    for result, message in cases:
        assert result.exit_code != 0 and message in str(result.exception), result.output
    resumed = extract(*boxed(photos, crops), "--box-padding", "1.25")  # the same: resumes
    assert resumed.exit_code == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--box-padding", "1.5"], "--box-padding applies to person crops: add --boxes FILE"),
        (["--include-crowd"], "--include-crowd applies to person crops"),
        (["--boxes", "BOXES", "--resize", "letterbox"], "--resize letterbox does not apply"),
        (["--boxes", "BOXES", "--box-padding", "0"], "--box-padding 0.0 must be a positive"),
        (["--boxes", "BOXES", "EXTRA"], "give the one folder its image names are relative to"),
        (["--boxes", "NOTBOXES"], "is not a box file"),
    ],
)
def test_bad_box_options_stop_before_any_work(photos, tmp_path, args, message):
    (tmp_path / "notboxes.txt").write_text("hello world\n")
    swap = {
        "BOXES": str(tmp_path / "boxes.csv"),
        "NOTBOXES": str(tmp_path / "notboxes.txt"),
        "EXTRA": str(DATA / "coffee.jpg"),
    }
    out = tmp_path / "f.h5"
    result = extract(photos, *[swap.get(a, a) for a in args], "-o", out, *FAST)
    assert result.exit_code != 0 and message in str(result.exception), result.exception
    assert not out.exists()


@pytest.mark.parametrize(
    ("boxes", "more", "message"),
    [
        ("b.json", [], "is not JSON (line 1"),
        # crops are upstream's, cut from the full decode: a draft would be recorded, not used
        ("boxes.csv", ["--jpeg-draft"], "--jpeg-draft does not apply to --boxes crops"),
        # NaN compares false with every score: it would keep every box
        ("boxes.csv", ["--min-score", "nan"], "--min-score nan is not a score"),
    ],
    ids=["bad-file", "jpeg-draft", "nan-min-score"],
)
def test_a_box_mistake_is_one_line_on_the_command_line(photos, tmp_path, boxes, more, message):
    (tmp_path / "b.json").write_text('{"images": [')
    out = tmp_path / "f.h5"
    proc = extract_subprocess(
        photos, "--boxes", tmp_path / boxes, *more, "-o", out, "--checkpoint", TINY
    )
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2 and stdout == ""
    assert stderr.count("\n") == 1 and message in stderr, stderr
    assert not out.exists()


def test_boxes_beyond_float32_are_failures_of_their_own_without_a_warning(photos, tmp_path):
    """Catches numpy's overflow RuntimeWarning (printed with its source line) for a box
    coordinate of 1e40 or a box too wide for float32 once padded, and such a box stored as
    a black crop or failing its image's other boxes."""
    text = "chelsea.jpg,1e40,30,60,100\nchelsea.jpg,0,0,3e38,10\nchelsea.jpg,20,30,60,100\n"
    (tmp_path / "huge.csv").write_text(text)
    out = tmp_path / "crops.h5"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = extract(*boxed(photos, out, "huge.csv"))
    assert result.exit_code == 0, result.output
    assert [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)] == []
    chelsea = str((photos / "chelsea.jpg").resolve())
    with open_features(out) as f:
        assert f.paths == [f"{chelsea}#box=2"]
        failed = dict(f.failed)
    assert "NaN or infinite coordinate, or one beyond float32's range" in failed[f"{chelsea}#box=0"]
    assert "too large or too small to crop in float32" in failed[f"{chelsea}#box=1"]


def test_parts_keep_an_images_boxes_together_and_merge(photos, tmp_path):
    """Catches boxes of one image split over parts (their key is not their file), and a
    merge that loses the box columns."""
    lines = ["path,x,y,w,h"] + [
        f"{name},{4 * i},{3 * i},{30 + i},{40 + i}"
        for name in ("astronaut.png", "chelsea.jpg", "coffee.jpg", "hubble_deep_field.jpg")
        for i in range(3)
    ]
    (tmp_path / "many.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "f.h5"
    for i in range(2):
        result = extract(*boxed(photos, out, "many.csv"), "--shard", f"{i}/2")
        assert result.exit_code == 0, result.output
    parts = sorted((tmp_path / "f.h5.parts").iterdir())
    for i, part in enumerate(parts):
        with open_features(part) as f:
            images = {k.rpartition("#box=")[0] for k in f.paths}
            assert all(part_index(image, 2) == i for image in images)
            assert all(len([k for k in f.paths if k.startswith(img + "#")]) == 3 for img in images)
    merged = sapiens2("merge", "-o", out, "--merge", "copy")
    assert merged.exit_code == 0, merged.output
    with open_features(out) as f:
        assert len(f.paths) == len(set(f.paths)) == 12
        assert f.columns["crop_affine"].shape == (12, 2, 3)
        assert set(f.columns["box_ids"].tolist()) == {0, 1, 2}


def test_viz_draws_the_crop_beside_its_features(photos, tmp_path):
    """Catches viz drawing the whole photo (or its aspect) for a crop's features."""
    out = tmp_path / "crops.h5"
    assert extract(*boxed(photos, out)).exit_code == 0
    pictures = tmp_path / "viz"
    result = sapiens2("viz", out, "-o", pictures, "--overlay", "--long-side", "64", "-q")
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in pictures.iterdir())
    assert names == ["0_astronaut_box0.png", "1_astronaut_box1.png", "2_chelsea_box0.png"]
    picture = np.asarray(Image.open(pictures / names[1]))
    assert picture.shape == (64, 96, 3)  # two 64 x 48 panels: the crop's aspect, not 1:1
    crop = crop_box(read_rgb(str(photos / "astronaut.png")), Box(60.0, 40.0, 20.0, 25.0, 1), SIZE)
    assert np.array_equal(picture[:, :48], crop.pixels)  # at the input size: the crop itself


def test_the_crop_reading_example_in_format_docs_runs(photos, tmp_path, monkeypatch, capsys):
    """docs/format.md's crop example draws a patch grid back onto the photo, as written."""
    (tmp_path / "one.csv").write_text("astronaut.png,10,5,85,123\n")
    assert extract(*boxed(photos, tmp_path / "crops.h5", "one.csv")).exit_code == 0
    (code,) = examples("format.md", "python3")
    monkeypatch.chdir(tmp_path)
    run_example(code, "format.md")
    printed = capsys.readouterr().out
    centre = re.search(r"crop centre at image point \((.*?), (.*?)\)", printed)
    np.testing.assert_allclose([float(centre[1]), float(centre[2])], (52.5, 66.5), atol=0.01)
    drawn = np.asarray(Image.open(tmp_path / "crop_grid.png"))
    assert drawn.shape == (128, 128, 3)
    with h5py.File(tmp_path / "crops.h5") as f:
        assert f["paths"].asstr()[0].endswith("astronaut.png#box=0")
