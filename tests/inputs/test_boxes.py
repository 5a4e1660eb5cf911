"""Box files: the three layouts written here, every bad file's one line, bad boxes flagged."""

from __future__ import annotations

import json
import math
import shutil
import warnings

import numpy as np
import pytest
from paths import DATA, copy_photos

from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.inputs.boxes.box_file import box_problem, load_boxes


@pytest.fixture
def images(tmp_path):
    """An image folder with COCO-style names (2017 and 2014) and a plain one."""
    names = ("000000000139.jpg", "COCO_val2014_000000000285.jpg", "sub/astronaut.png")
    return copy_photos(tmp_path / "images", dict.fromkeys(names, "astronaut.png"))


def write(tmp_path, name, content) -> str:
    path = tmp_path / name
    if isinstance(content, (dict, list)):
        content = json.dumps(content)
    path.write_text(content)
    return str(path)


def coco(person_id: int = 1, categories: bool = True) -> dict:
    data = {
        "images": [
            {"id": 139, "file_name": "000000000139.jpg"},
            {"id": 285, "file_name": "COCO_val2014_000000000285.jpg"},
            {"id": 7, "file_name": "sub/astronaut.png"},  # no annotations: no entry
        ],
        "annotations": [
            {"id": 11, "image_id": 139, "category_id": person_id, "bbox": [1.1, 2, 30, 40]},
            {
                "id": 12,
                "image_id": 139,
                "category_id": person_id,
                "bbox": [5, 6, 7, 8],
                "iscrowd": 1,
            },
            {"id": 13, "image_id": 285, "category_id": person_id, "bbox": [0, 0, 10, 20]},
            {"id": 14, "image_id": 285, "category_id": 99, "bbox": [0, 0, 1, 1]},  # a dog
        ],
    }
    if categories:
        data["categories"] = [{"id": 99, "name": "dog"}, {"id": person_id, "name": "person"}]
    return data


def test_coco_annotations_keep_people_and_skip_crowds(tmp_path, images):
    """Catches a non-person box kept, a crowd box kept, ids or names mixed up between images."""
    found = load_boxes(write(tmp_path, "ann.json", coco()), str(images))
    assert found.layout == "coco"
    assert list(found.images) == [
        str(images / "000000000139.jpg"),
        str(images / "COCO_val2014_000000000285.jpg"),
    ]
    first, second = found.images.values()
    (box,) = first
    assert (box.x, box.y, box.w, box.h, box.box_id) == (np.float32(1.1), 2, 30, 40, 11)
    assert math.isnan(box.score)
    assert first[0].x == float(np.float32(1.1))  # float32 as stored, not 1.1
    assert [b.box_id for b in second] == [13]
    assert found.dropped == {"crowd": 1, "not a person": 1}
    crowd = load_boxes(write(tmp_path, "ann.json", coco()), str(images), include_crowd=True)
    assert [b.box_id for b in crowd.images[str(images / "000000000139.jpg")]] == [11, 12]


def test_coco_person_is_found_by_name_or_is_id_1_without_categories(tmp_path, images):
    """Catches a person id hard-coded to 1 when the file names another."""
    renumbered = load_boxes(write(tmp_path, "a.json", coco(person_id=5)), str(images))
    assert renumbered.box_count == 2
    bare = load_boxes(write(tmp_path, "b.json", coco(categories=False)), str(images))
    assert bare.box_count == 2 and bare.dropped["not a person"] == 1


def test_detection_results_with_min_score_and_ids_resolved_by_file_name(tmp_path, images):
    """Catches min_score ignored, an unpadded id not matched, file_name not preferred."""
    results = [
        {"image_id": 139, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.9},
        {"image_id": 139, "category_id": 1, "bbox": [5, 6, 7, 8], "score": 0.1},
        {"image_id": 139, "category_id": 3, "bbox": [5, 6, 7, 8], "score": 0.99},
        {"image_id": 139, "bbox": [9, 9, 9, 9], "score": 0.5},
        {"image_id": 285, "bbox": [1, 1, 5, 5], "score": 0.7, "id": 40},
        {"image_id": 1, "file_name": "sub/astronaut.png", "bbox": [0, 0, 5, 5], "score": 0.8},
    ]
    found = load_boxes(write(tmp_path, "res.json", results), str(images), min_score=0.3)
    assert found.layout == "coco-results"
    boxes = found.images
    assert [(b.box_id, b.score) for b in boxes[str(images / "000000000139.jpg")]] == [
        (0, pytest.approx(0.9)),
        (3, pytest.approx(0.5)),  # ids are positions among the image's entries, dropped too
    ]
    assert [b.box_id for b in boxes[str(images / "COCO_val2014_000000000285.jpg")]] == [40]
    assert [b.box_id for b in boxes[str(images / "sub" / "astronaut.png")]] == [0]
    assert found.dropped == {"score below 0.3": 1, "not a person": 1}
    assert load_boxes(write(tmp_path, "res.json", results), str(images)).box_count == 5


@pytest.mark.parametrize(
    "text",
    [
        "sub/astronaut.png,1.5,2,3,4\n000000000139.jpg,5,6,7,8,0.25\n",
        "path,x,y,w,h,score\nsub/astronaut.png,1.5,2,3,4,\n000000000139.jpg,5,6,7,8,0.25\n",
        "score,h,w,y,x,label,path\n,4,3,2,1.5,a,sub/astronaut.png\n0.25,8,7,6,5,b,000000000139.jpg\n",
    ],
    ids=["plain", "header", "header-reordered"],
)
def test_csv_with_or_without_a_header(tmp_path, images, text):
    """Catches the header taken for a box, columns read by position under a header."""
    found = load_boxes(write(tmp_path, "b.csv", text), str(images))
    assert found.layout == "csv"
    (box,) = found.images[str(images / "sub" / "astronaut.png")]
    assert (box.x, box.y, box.w, box.h, box.box_id) == (1.5, 2, 3, 4, 0) and math.isnan(box.score)
    (box,) = found.images[str(images / "000000000139.jpg")]
    assert (box.x, box.y, box.w, box.h) == (5, 6, 7, 8) and box.score == 0.25


def test_csv_ids_and_quoted_paths(tmp_path, images):
    shutil.copy(DATA / "astronaut.png", images / "a, b.png")
    text = 'path,x,y,w,h,id\n"a, b.png",1,2,3,4,70\n"a, b.png",1,2,3,4,71\n'
    found = load_boxes(write(tmp_path, "b.csv", text), str(images))
    assert [b.box_id for b in found.images[str(images / "a, b.png")]] == [70, 71]


def test_jsonl_with_keys_or_bbox(tmp_path, images):
    lines = [
        {"path": "sub/astronaut.png", "x": 1, "y": 2, "w": 3, "h": 4, "score": 0.5},
        {"path": "sub/astronaut.png", "bbox": [10, 20, 30, 40], "id": 9},
        {"path": str(images / "000000000139.jpg"), "x": 0, "y": 0, "w": 1, "h": 1},  # absolute
    ]
    text = "\n".join(json.dumps(line) for line in lines) + "\n\n"
    found = load_boxes(write(tmp_path, "b.jsonl", text), str(images), min_score=0.7)
    assert found.layout == "jsonl"
    both = found.images[str(images / "sub" / "astronaut.png")]
    assert [(b.box_id, b.x) for b in both] == [(9, 10.0)]  # 0.5 < 0.7; no score is kept
    assert str(images / "000000000139.jpg") in found.images


BAD_FILES = {
    "broken.json": ('{"images": [', "is not JSON (line 1"),
    "binary.csv": (b"\xff\xfe\x00\x81garbage", "is not text"),
    "empty.csv": ("\n\n", "is empty"),
    "layout.json": ({"boxes": []}, "JSON but not a known layout"),
    "numbers.json": ([1, 2, 3], "JSON but not a known layout"),
    "orphan.json": (
        {"images": [], "annotations": [{"id": 1, "image_id": 3, "bbox": [0, 0, 1, 1]}]},
        "annotation 1 has image_id 3, which is not in 'images'",
    ),
    "nofile.json": (
        [{"image_id": 632, "bbox": [0, 0, 1, 1], "score": 1}],
        "has image_id 632, and no image under",
    ),
    "fields.csv": ("a.png,1,2,3\n", "line 1 is not CSV path,x,y,w,h[,score] (4 fields)"),
    "words.csv": ("a.png,1,2,three,4\n", "line 1: x, y, w, h must be numbers"),
    "header.csv": ("path,left,top,w,h\na.png,1,2,3,4\n", "CSV header without x, y"),
    "bbox.json": (
        {"images": [{"id": 1, "file_name": "a"}], "annotations": [{"image_id": 1, "bbox": [1]}]},
        "bbox must be 4 numbers",
    ),
    "twice.jsonl": (
        '{"path": "sub/astronaut.png", "x": 0, "y": 0, "w": 1, "h": 1, "id": 4}\n'
        '{"path": "./sub/astronaut.png", "x": 0, "y": 0, "w": 1, "h": 1, "id": 4}\n',
        "gives box id 4 twice for image",
    ),
    "noperson.json": (
        {"images": [], "annotations": [], "categories": [{"id": 1, "name": "cat"}]},
        "has no category named 'person'",
    ),
    "nobody.json": (
        {
            "images": [{"id": 1, "file_name": "a"}],
            "annotations": [{"image_id": 1, "bbox": [0, 0, 1, 1], "iscrowd": 1}],
        },
        "holds no person boxes to crop (left out: 1 crowd)",
    ),
    "elsewhere.csv": ("nowhere/a.png,1,2,3,4\n", "none of the 1 images named in box file"),
    "badscore.jsonl": ('{"path": "a.png", "x": 0, "y": 0, "w": 1, "h": 1, "score": "hi"}', "score"),
    "badid.csv": ("path,x,y,w,h,id\nsub/astronaut.png,0,0,1,1,x7\n", "id must be an integer"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_box_files_stop_with_one_line(tmp_path, images, name):
    """Each catches a bad file silently read as no boxes, or a traceback instead of a line."""
    content, message = BAD_FILES[name]
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        write(tmp_path, name, content)
    with pytest.raises(Sapiens2Error) as caught:
        load_boxes(path, str(images))
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert name in str(caught.value)


def test_a_missing_box_file_is_one_line(tmp_path, images):
    with pytest.raises(Sapiens2Error, match=r"cannot read box file .*missing\.csv"):
        load_boxes(tmp_path / "missing.csv", str(images))


def test_bad_boxes_are_kept_and_flagged_one_by_one(tmp_path, images):
    """Catches a bad box dropping its file, or passing as good: each has its own reason."""
    text = (
        "sub/astronaut.png,1,2,3,4\n"
        "sub/astronaut.png,nan,2,3,4\n"
        "sub/astronaut.png,1,2,0,4\n"
        "sub/astronaut.png,1,2,3,-4\n"
        "sub/astronaut.png,500,2,3,4\n"
    )
    boxes = load_boxes(write(tmp_path, "b.csv", text), str(images)).images
    good, nan, zero, negative, far = boxes[str(images / "sub" / "astronaut.png")]
    assert box_problem(good, (128, 128)) is None
    assert "NaN" in box_problem(nan)
    assert "zero or negative size" in box_problem(zero)
    assert "zero or negative size" in box_problem(negative)
    assert box_problem(far) is None  # outside only shows with the image's size
    assert "entirely outside the 128x128 image" in box_problem(far, (128, 128))


def test_a_non_person_crowd_box_stays_out_with_include_crowd(tmp_path, images):
    """Catches the crowd rule applied before the person filter: --include-crowd would then
    bring back a crowd of dogs."""
    data = coco()
    data["annotations"].append(
        {"id": 15, "image_id": 285, "category_id": 99, "bbox": [2, 2, 9, 9], "iscrowd": 1}
    )
    found = load_boxes(write(tmp_path, "ann.json", data), str(images), include_crowd=True)
    ids = {b.box_id for boxes in found.images.values() for b in boxes}
    assert ids == {11, 12, 13}  # the person crowd 12 is back; dogs 14 and 15 are not
    assert found.dropped == {"not a person": 2}


@pytest.mark.parametrize("layout", ["csv", "jsonl"])
def test_min_score_keeps_a_box_scored_exactly_at_it(tmp_path, images, layout):
    """Catches `<=` for `<`, and a comparison after the float32 rounding: float32(0.7) is
    0.69999999 and would drop the box scored exactly 0.7."""
    scores = [0.7, 0.6999999, 0.71]
    if layout == "csv":
        text = "".join(f"sub/astronaut.png,1,2,3,4,{s}\n" for s in scores)
    else:
        text = "".join(
            json.dumps({"path": "sub/astronaut.png", "bbox": [1, 2, 3, 4], "score": s}) + "\n"
            for s in scores
        )
    found = load_boxes(write(tmp_path, f"b.{layout}", text), str(images), min_score=0.7)
    (kept,) = found.images.values()
    assert [b.box_id for b in kept] == [0, 2]
    assert found.dropped == {"score below 0.7": 1}


def test_a_nan_min_score_is_refused(tmp_path, images):
    """Catches NaN passing as a threshold: every comparison with it is false, so it would
    silently keep every box."""
    path = write(tmp_path, "b.csv", "sub/astronaut.png,1,2,3,4,0.5\n")
    with pytest.raises(Sapiens2Error) as caught:
        load_boxes(path, str(images), min_score=math.nan)
    assert str(caught.value) == "--min-score nan is not a score: give a number, like 0.3"


def test_a_coordinate_beyond_float32_is_a_bad_box_without_a_warning(tmp_path, images):
    """Catches numpy's overflow RuntimeWarning (printed with a source line) on 1e40, and
    such a box passing as good."""
    text = "sub/astronaut.png,1e40,2,3,4,1e40\nsub/astronaut.png,1,2,3,4\n"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        boxes = load_boxes(write(tmp_path, "b.csv", text), str(images)).images
    huge, good = boxes[str(images / "sub" / "astronaut.png")]
    assert "beyond float32's range (x, y, w, h = inf, 2, 3, 4)" in box_problem(huge)
    assert box_problem(good, (128, 128)) is None
