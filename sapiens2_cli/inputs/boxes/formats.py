"""Person box files, each layout -> raw box entries, for `boxes.load_boxes` to collect.

Three layouts, recognised from the content, not the file name:

* COCO annotations: a JSON object with `images` and `annotations`. Only the person
  category is kept (the category named "person"; id 1 when `categories` is absent); crowd
  boxes (`iscrowd` 1) are left out unless asked for. Image ids map to `file_name`s through
  `images`.
* COCO detection results: a JSON list of `{image_id, bbox, score[, category_id, id,
  file_name]}`; `category_id`, when there, must be 1 (person). A result's image is its
  `file_name` when it has one, else the file under the image folder whose name ends in its
  id, zero-padded or not (`000000000139.jpg`, `COCO_val2014_000000000139.jpg`): the COCO
  convention, so results can be used without the annotation file they were made for.
* JSONL (`{"path", "x", "y", "w", "h"[, "score", "id"]}` per line; `"bbox": [x, y, w, h]`
  also works) or CSV (`path,x,y,w,h[,score]`, with or without a header row; a header may
  add an `id` column), for detector output from anywhere.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.inputs.sources import walk

BoxLayout = Literal["coco", "coco-results", "jsonl", "csv"]
#: The person category in COCO (and in detection results, which carry no category list).
COCO_PERSON_ID = 1
_PLAIN = {"path": 0, "x": 1, "y": 2, "w": 3, "h": 4, "score": 5}  # a CSV without header
_COCO_NAME = re.compile(r"(?:.*_)?0*(\d+)")  # 000000000139, COCO_val2014_000000000139

#: One raw entry: (image name, (x, y, w, h), id or None, score or NaN, drop reason or None).
RawBox = tuple[str, tuple[float, float, float, float], "int | None", float, "str | None"]


def parse_box_file(f: Any, name: str, image_root: str) -> tuple[BoxLayout, list[RawBox]]:
    """The layout of the open text file `f` (named `name`) and its entries, in file order;
    Sapiens2Error for a file of no known layout or with a malformed entry."""
    first = _first_line(f, name)
    if first.startswith("{") and _is_jsonl_record(first):
        return "jsonl", list(_jsonl(f, name))
    if first.startswith(("{", "[")):
        return _json(f.read(), name, image_root)
    return "csv", list(_csv(f, name))


def _first_line(f: Any, name: str) -> str:
    for line in f:
        if line.strip():
            f.seek(0)
            return line.strip()
    raise Sapiens2Error(f"box file {name} is empty")


def _is_jsonl_record(line: str) -> bool:
    if len(line) > 1 << 20:  # a whole COCO file on one line, not a record
        return False
    try:
        return "path" in json.loads(line)
    except (ValueError, TypeError):
        return False


def _jsonl(lines: Iterable[str], name: str) -> Iterator[RawBox]:
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"box file {name} line {number}"
        try:
            record = json.loads(line)
        except ValueError as e:
            raise Sapiens2Error(f"{where} is not JSON ({e.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("path"), str):
            raise Sapiens2Error(f"{where} is not an object with a string 'path'")
        if "bbox" in record:
            coords = _four(record["bbox"], where)
        else:
            coords = _four([record.get(k) for k in "xywh"], where, "x, y, w, h")
        yield record["path"], coords, _id(record.get("id"), where), _score(record, where), None


def _csv(f: Iterable[str], name: str) -> Iterator[RawBox]:
    columns: dict[str, int] | None = None  # from the header row, or the plain order
    for number, row in enumerate(csv.reader(f), 1):
        if not "".join(row).strip():
            continue
        if columns is None:
            if len(row) > 1 and not _is_number(row[1]):
                columns = _header(row, name)
                continue
            columns = _PLAIN
        if columns is _PLAIN and len(row) not in (5, 6):
            raise Sapiens2Error(
                f"box file {name} is not a box file: not JSON, and line {number} is not CSV "
                f"path,x,y,w,h[,score] ({len(row)} field{'s' * (len(row) != 1)})"
            )
        cells = [row[i] if i < len(row) else "" for i in columns.values()]
        fields = dict(zip(columns, cells, strict=True))
        where = f"box file {name} line {number}"
        coords = _four([fields[k] for k in "xywh"], where, "x, y, w, h")
        score = fields.get("score", "").strip()
        box_id = fields.get("id", "").strip()
        yield (
            fields["path"],
            coords,
            None if box_id == "" else _id(box_id, where),
            math.nan if score == "" else _number(score, where, "score"),
            None,
        )


def _header(row: list[str], name: str) -> dict[str, int]:
    columns = {cell.strip().lower(): i for i, cell in enumerate(row)}
    missing = [key for key in ("path", "x", "y", "w", "h") if key not in columns]
    if missing:
        raise Sapiens2Error(
            f"box file {name} has a CSV header without {', '.join(missing)}: "
            "it needs path,x,y,w,h (and may have score, id)"
        )
    return columns


def _json(text: str, name: str, image_root: str) -> tuple[BoxLayout, list[RawBox]]:
    try:
        data = json.loads(text)
    except ValueError as e:
        raise Sapiens2Error(
            f"box file {name} is not JSON (line {getattr(e, 'lineno', '?')}: "
            f"{getattr(e, 'msg', e)}), nor JSONL of objects with 'path'"
        ) from None
    if isinstance(data, dict) and "images" in data and "annotations" in data:
        return "coco", _coco(data, name)
    if isinstance(data, list) and all(
        isinstance(r, dict) and "image_id" in r and "bbox" in r for r in data
    ):
        return "coco-results", _results(data, name, image_root)
    raise Sapiens2Error(
        f"box file {name} is JSON but not a known layout: expected COCO annotations "
        "(an object with 'images' and 'annotations') or detection results (a list of "
        "objects with 'image_id', 'bbox', 'score')"
    )


def _coco(data: dict, name: str) -> list[RawBox]:
    files: dict[Any, str] = {}
    for image in data["images"]:
        if not isinstance(image, dict) or "id" not in image or "file_name" not in image:
            raise Sapiens2Error(f"box file {name}: an entry of 'images' lacks id or file_name")
        files[image["id"]] = image["file_name"]
    person = COCO_PERSON_ID
    categories = data.get("categories")
    if categories:
        ids = [c.get("id") for c in categories if c.get("name") == "person"]
        if not ids:
            raise Sapiens2Error(f"box file {name} has no category named 'person'")
        person = ids[0]
    raw: list[RawBox] = []
    for i, ann in enumerate(data["annotations"]):
        where = f"box file {name} annotation {ann.get('id', f'#{i}')}"
        image_id = ann.get("image_id")
        if image_id not in files:
            raise Sapiens2Error(f"{where} has image_id {image_id}, which is not in 'images'")
        reason = None
        if ann.get("category_id", person) != person:  # first: --include-crowd keeps people
            reason = "not a person"
        elif ann.get("iscrowd", 0):
            reason = "crowd"
        coords = _four(ann.get("bbox"), where)
        raw.append((files[image_id], coords, _id(ann.get("id"), where), math.nan, reason))
    return raw


def _results(data: list[dict], name: str, image_root: str) -> list[RawBox]:
    by_id: dict[int, str] | None = None
    raw: list[RawBox] = []
    for i, result in enumerate(data):
        where = f"box file {name} result #{i}"
        file_name = result.get("file_name")
        if file_name is None:
            if by_id is None:
                by_id = _coco_numbered(image_root, name)
            file_name = by_id.get(_id(result["image_id"], where))
            if file_name is None:
                raise Sapiens2Error(
                    f"{where} has image_id {result['image_id']}, and no image under "
                    f"{image_root} is named by that id (e.g. {result['image_id']:012d}.jpg): "
                    "add 'file_name' to each result or give the COCO image folder"
                )
        reason = None
        if result.get("category_id", COCO_PERSON_ID) != COCO_PERSON_ID:
            reason = "not a person"
        coords = _four(result["bbox"], where)
        raw.append((file_name, coords, _id(result.get("id"), where), _score(result, where), reason))
    return raw


def _coco_numbered(image_root: str, name: str) -> dict[int, str]:
    """Image files under `image_root` named by a COCO image id, relative to it."""
    if not os.path.isdir(image_root):
        raise Sapiens2Error(
            f"box file {name} holds detection results without 'file_name', which need the "
            "image folder to find images by id: give a folder as INPUT"
        )
    found: dict[int, str] = {}
    for path in walk(image_root):
        match = _COCO_NAME.fullmatch(Path(path).stem)
        if match:
            found.setdefault(int(match[1]), os.path.relpath(path, image_root))
    return found


def _four(value: Any, where: str, what: str = "bbox") -> tuple[float, ...]:
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        raise Sapiens2Error(f"{where}: {what} must be 4 numbers [x, y, w, h], not {value!r}")
    try:
        return tuple(map(_float, value))
    except (TypeError, ValueError):
        raise Sapiens2Error(f"{where}: {what} must be numbers, not {value!r}") from None


def _float(value: Any) -> float:
    if isinstance(value, bool) or value is None:
        raise TypeError
    return float(value)  # numbers, and number strings from CSV ("nan" too)


def _number(value: Any, where: str, what: str) -> float:
    try:
        return _float(value)
    except (TypeError, ValueError):
        raise Sapiens2Error(f"{where}: {what} must be a number, not {value!r}") from None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _score(record: dict, where: str) -> float:
    score = record.get("score")
    return math.nan if score is None else _number(score, where, "score")


def _id(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise Sapiens2Error(f"{where}: id must be an integer, not {value!r}")
