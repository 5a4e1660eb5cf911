"""The viz run: a feature file in, one PNG per chosen image out (and a contact sheet).

reader -> patch grid -> colouring (per image, or one joint fit on a sample) -> picture ->
PNG. Rows are read one at a time, so memory stays bounded whatever the file's size.
"""

from __future__ import annotations

import contextlib
import logging
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from sapiens2_cli.config.choices import FitMode
from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.inputs.decode import ImageError
from sapiens2_cli.inputs.items import split_key
from sapiens2_cli.inputs.sources import identity
from sapiens2_cli.output.atomic import removed_on_failure
from sapiens2_cli.output.disk import one_line_if_full
from sapiens2_cli.output.features import FeatureFile
from sapiens2_cli.output.reader import open_features
from sapiens2_cli.viz.colours import Colouring, fit_colouring
from sapiens2_cli.viz.inputs import InputImages
from sapiens2_cli.viz.patches import GridSpec, grid_spec, image_region, patch_grid
from sapiens2_cli.viz.render import (
    contact_sheet,
    note_panel,
    panel_size,
    render_components,
    side_by_side,
)

log = logging.getLogger(__name__)


#: A joint fit samples patches from at most this many images, spread evenly over the file,
JOINT_IMAGES = 256
#: and keeps at most this many patches, or fewer for wide features (2**25 float32 = 128 MiB).
JOINT_PATCHES = 65536
JOINT_VALUES = 1 << 25
GRID_NAME = "grid.png"
GRID_CELL = 256  # contact sheet cell height in pixels, at most --long-side


@dataclass(frozen=True)
class VizOptions:
    """How to draw: which layer, how many components, how to fit, what to add."""

    layer: int | None = None  # block index as stored; None: the last stored layer
    components: int = 3  # 3: RGB from the first three components; 1: grey from the first
    fit: FitMode = FitMode.PER_IMAGE
    foreground_threshold: float | None = None  # in (0, 1); None: keep the background
    overlay: bool = False  # input image on the left
    grid: bool = False  # also write a contact sheet
    long_side: int = 512  # pixels, longer side of each picture (of each half with overlay)
    image_root: Path | None = None  # relative stored paths are under this; None: the cwd


@dataclass
class VizResult:
    """What a run wrote, for the summary line and --json."""

    pictures: list[Path] = field(default_factory=list)
    grid: Path | None = None
    missing_images: list[str] = field(default_factory=list)


def visualize(
    features: str | Path,
    out_dir: Path,
    options: VizOptions,
    images: int | None = None,
    paths: list[str] | None = None,
    progress: bool = True,
) -> VizResult:
    """Write one PNG per chosen row of `features` into `out_dir`.

    Rows are the first `images` (default 16), or those whose stored path is in `paths`.
    """
    _check_options(options)
    with open_features(features) as ff:
        spec = grid_spec(ff.settings, options.layer, features)
        if len(ff) == 0:
            raise Sapiens2Error(f"{features} holds no features yet: run extract on it first")
        rows = select_rows(ff, features, images, paths)
        with _out_dir(out_dir):
            return _draw(ff, rows, spec, out_dir, options, progress)


def _draw(
    ff: FeatureFile,
    rows: list[int],
    spec: GridSpec,
    out_dir: Path,
    options: VizOptions,
    progress: bool,
) -> VizResult:
    """The pictures of `rows`, and the contact sheet if asked, written into `out_dir`."""
    joint = None
    if options.fit == "joint":
        x, border = joint_sample(ff, spec, progress)
        joint = fit_colouring(x, x[border], options.components, options.foreground_threshold)
    result = VizResult()
    fps = float(ff.settings.get("video_fps", 1.0))  # always there when frames are
    inputs = InputImages(options.image_root, fps, ff.settings.get("image_column"))
    sheet: list[tuple[Image.Image, str]] = []
    digits = len(str(len(ff) - 1))
    bar = tqdm(rows, desc="viz", unit="img", disable=not progress, leave=False)
    with logging_redirect_tqdm():  # warnings print above the bar, not through it
        for row in bar:
            picture = _draw_row(ff, row, spec, options, joint, inputs, result)
            target = out_dir / picture_name(row, ff.paths[row], digits)
            _save(picture, target)
            result.pictures.append(target)
            if options.grid:
                sheet.append((picture, target.name))
    if options.grid:
        result.grid = out_dir / GRID_NAME
        _save(contact_sheet(sheet, min(GRID_CELL, options.long_side)), result.grid)
    return result


def _check_options(options: VizOptions) -> None:
    FitMode.parse(options.fit, "--fit")
    if options.components not in (1, 3):
        raise Sapiens2Error(
            f"--components {options.components}: use 3 (RGB) or 1 (grey), the first components"
        )
    t = options.foreground_threshold
    if t is not None and not 0 < t < 1:
        raise Sapiens2Error(f"--foreground-threshold {t} is not between 0 and 1: try 0.5")
    if options.long_side < 8:
        raise Sapiens2Error(f"--long-side {options.long_side} is too small: use 8 or more pixels")


def select_rows(
    ff: FeatureFile, source: Path, images: int | None, paths: list[str] | None
) -> list[int]:
    """The rows to draw: the first `images`, or those of `paths` in the order given."""
    if images is not None and paths:
        raise Sapiens2Error("give --images or --paths, not both")
    if not paths:
        count = 16 if images is None else images
        if count < 1:
            raise Sapiens2Error(f"--images {count}: give 1 or more")
        return list(range(min(count, len(ff))))
    # keys as stored (a frame's, a crop's, a --key-column value) and as their identity (a
    # file's key is its resolved path), so any spelling of a file finds its row
    by_path: dict[str, int] = {}
    for row, stored in enumerate(ff.paths):
        by_path.setdefault(stored, row)
        by_path.setdefault(identity(stored), row)
    failed = dict(ff.failed)
    rows: list[int] = []
    for wanted in dict.fromkeys(paths):
        row = by_path.get(wanted, by_path.get(identity(wanted)))
        if row is not None:
            rows.append(row)
        elif wanted in failed:
            raise Sapiens2Error(
                f"{wanted} failed at extract ({failed[wanted]}), so {source} has no features "
                "for it: fix the image and run extract again"
            )
        else:
            raise Sapiens2Error(
                f"{source} has no features for {wanted}: give --paths as stored "
                f"(the first is {ff.paths[0]!r})"
            )
    return rows


@contextlib.contextmanager
def _out_dir(out_dir: Path) -> Iterator[None]:
    """`out_dir`, made if missing; if this run made it and fails before writing into it (a
    full disk), it goes again."""
    made = not out_dir.exists()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise Sapiens2Error(f"{out_dir} is a file: give -o a folder for the pictures") from None
    except OSError as e:
        raise Sapiens2Error(f"cannot create {out_dir} ({e.strerror}): choose another -o") from None
    try:
        yield
    except BaseException:
        if made and not any(out_dir.iterdir()):
            out_dir.rmdir()
        raise


def _save(picture: Image.Image, target: Path) -> None:
    """Write a PNG; one that cannot be finished is removed, and a full disk is one line."""
    with one_line_if_full(target), removed_on_failure(target):
        picture.save(target)


def joint_sample(
    ff: FeatureFile, spec: GridSpec, progress: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Patches (N, D) for a joint fit and a bool (N,) flag for those on an image's border.

    At most JOINT_IMAGES rows, spread evenly over the file and read one at a time, and at
    most JOINT_PATCHES patches (fewer for wide features), so the cost is bounded whatever
    the file's size. The same file always gives the same sample.
    """
    n = len(ff)
    rows = np.unique(np.linspace(0, n - 1, num=min(n, JOINT_IMAGES)).round().astype(int))
    dim = int(ff.settings["embed_dim"])
    quota = max(2, min(JOINT_PATCHES, JOINT_VALUES // dim) // len(rows))
    generator = torch.Generator().manual_seed(0)
    samples, borders = [], []
    for row in tqdm(rows.tolist(), desc="joint fit", unit="img", disable=not progress, leave=False):
        region = image_region(spec, _content_box(ff, row))
        patches, ring = region.patches(patch_grid(ff.read(slice(row, row + 1))[0], spec))
        keep = torch.randperm(len(patches), generator=generator)[:quota]
        samples.append(patches[keep])
        borders.append(ring[keep])
    return torch.cat(samples), torch.cat(borders)


def _content_box(ff: FeatureFile, row: int) -> np.ndarray | None:
    return None if ff.content_box is None else ff.content_box[row]


def _draw_row(
    ff: FeatureFile,
    row: int,
    spec: GridSpec,
    options: VizOptions,
    joint: Colouring | None,
    inputs: InputImages,
    result: VizResult,
) -> Image.Image:
    """One row -> its picture (with the input image on the left if asked)."""
    stored = ff.paths[row]
    grid = patch_grid(ff.read(slice(row, row + 1))[0], spec)  # (h, w, D)
    region = image_region(spec, _content_box(ff, row))
    colouring = joint
    if colouring is None:
        patches, ring = region.patches(grid)
        colouring = fit_colouring(
            patches, patches[ring], options.components, options.foreground_threshold
        )
    h, w, d = grid.shape
    values = colouring.apply(grid.reshape(h * w, d)).reshape(h, w, -1)
    original = (int(ff.original_size[row][0]), int(ff.original_size[row][1]))
    affine = ff.columns["crop_affine"][row] if "crop_affine" in ff.columns else None
    size = panel_size(original if affine is None else spec.image_size, options.long_side)
    picture, kept = render_components(
        values, region, spec.image_size, size, options.foreground_threshold
    )
    if kept == 0:
        log.warning(
            "%s: nothing is above --foreground-threshold %s, so its picture is all background: "
            "lower the threshold",
            stored,
            options.foreground_threshold,
        )
    if options.overlay:
        panel = _input_panel(inputs, stored, original, size, result, affine, spec.image_size)
        picture = side_by_side(panel, picture)
    return picture


def _input_panel(
    inputs: InputImages,
    stored: str,
    original: tuple[int, int],
    size: tuple[int, int],
    result: VizResult,
    affine: np.ndarray | None = None,
    input_size: tuple[int, int] = (0, 0),
) -> Image.Image:
    """The input image at `size`, decoded as extract decodes it (a frame from its video, a
    member from its tar, a crop cut again with the stored matrix), or a note saying why not."""
    try:
        decoded = inputs.read(stored, size, affine, input_size)
    except ImageError as e:
        path = inputs.path(stored)
        log.warning("%s: %s at %s; its picture says so (see --image-root)", stored, e, path)
        result.missing_images.append(stored)
        return note_panel(size, f"{e}: {stored}")
    if decoded.original_size != original:
        log.warning(
            "%s is %dx%d now but was %dx%d at extract: it may have changed since",
            stored,
            *decoded.original_size,
            *original,
        )
    return Image.fromarray(decoded.pixels, "RGB")


_UNSAFE = re.compile(r"[^\w.-]+")


def picture_name(row: int, stored: str, digits: int) -> str:
    """'00042_IMG_0001.png' (a crop: '00042_IMG_0001_box3.png'): the row keeps names unique
    (duplicate basenames, re-used names), the stem keeps them readable; only word
    characters, '.' and '-' survive."""
    path, fragment = split_key(stored)
    stem = unicodedata.normalize("NFC", Path(path.replace("\\", "/")).stem)
    stem = _UNSAFE.sub("_", stem).strip("._")[:80] or "image"
    if fragment:  # a crop: '_box3'; a frame: '_t_1.000'
        stem += "_" + _UNSAFE.sub("_", fragment.replace("box=", "box", 1))
    return f"{row:0{digits}d}_{stem}.png"
