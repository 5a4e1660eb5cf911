"""Person crops: upstream's top-down transform (docs/crop.md), checked by hand.

Every reference here is computed in the test from docs/crop.md's formulas, not from
sapiens2_cli: the matrix in float64 and again in float32 in upstream's order of operations,
the pixels with cv2.warpAffine given that matrix and upstream's own flags, and a few pixels
by a bilinear sample written in numpy.
"""

from __future__ import annotations

import math
import warnings

import cv2
import numpy as np
import pytest
from paths import DATA
from PIL import Image

from sapiens2_cli.inputs.boxes.box_file import Box
from sapiens2_cli.inputs.boxes.crop import crop_box, read_rgb
from sapiens2_cli.inputs.decode import ImageError, decode_image

SIZE = (64, 48)  # (H, W): not square, so a swapped axis shows
PERSON = Box(10.0, 5.0, 85.0, 123.0, 0)  # the astronaut in astronaut.png (128 x 128)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return np.asarray(Image.open(DATA / "astronaut.png").convert("RGB"))


def matrix64(box: Box, size: tuple[int, int], padding: float = 1.25) -> np.ndarray:
    """docs/crop.md's steps 1-4 in float64."""
    height, width = size
    x1, y1, x2, y2 = box.x, box.y, box.x + box.w, box.y + box.h
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    sw, sh = (x2 - x1) * padding, (y2 - y1) * padding
    aspect = width / height
    sw, sh = (sw, sw / aspect) if sw > sh * aspect else (sh * aspect, sh)
    kx, ky = (width - 1) / sw, (height - 1) / sh
    return np.array([[kx, 0, kx * (sw / 2 - cx)], [0, ky, ky * (sh / 2 - cy)]])


def matrix32(box: Box, size: tuple[int, int], padding: float = 1.25) -> np.ndarray:
    """The same steps with upstream's dtypes: float32 box arrays, Python-float factors."""
    height, width = size
    xywh = np.array([[box.x, box.y, box.w, box.h]], np.float32)
    corners = np.hstack([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]])  # x1, y1, x2, y2
    center = (corners[0, :2] + corners[0, 2:]) * 0.5
    scale = (corners[0, 2:] - corners[0, :2]) * padding
    aspect = width / height
    if scale[0] > scale[1] * aspect:
        scale = np.array([scale[0], scale[0] / aspect], np.float32)
    else:
        scale = np.array([scale[1] * aspect, scale[1]], np.float32)
    kx, ky = (width - 1) / scale[0], (height - 1) / scale[1]
    m = np.zeros((2, 3), np.float32)
    m[0, 0], m[1, 1] = kx, ky
    m[0, 2] = kx * (-0.5 * (center[0] * 2) + 0.5 * scale[0])
    m[1, 2] = ky * (-0.5 * (center[1] * 2) + 0.5 * scale[1])
    return m


def upstream_warp(image: np.ndarray, m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """cv2.warpAffine with upstream's literal flags: INTER_AREA below scale 1, else cubic."""
    flags = cv2.INTER_AREA if min(m[0, 0], m[1, 1]) < 1 else cv2.INTER_CUBIC
    return cv2.warpAffine(image, m, (size[1], size[0]), flags=flags)


def random_boxes(n: int, image_size: tuple[int, int], seed: int) -> list[Box]:
    rng = np.random.default_rng(seed)
    height, width = image_size
    boxes = []
    for i in range(n):
        w, h = rng.uniform(2, width), rng.uniform(2, height)
        x, y = rng.uniform(-w / 2, width - w / 2), rng.uniform(-h / 2, height - h / 2)
        boxes.append(Box(*np.float32([x, y, w, h]).tolist(), i))
    return boxes


@pytest.mark.parametrize(
    ("box", "padding"),
    [
        (PERSON, 1.25),  # tall: the width grows to the aspect
        (Box(20.5, 40.25, 90.0, 30.0, 1), 1.25),  # wide: the height grows
        (PERSON, 1.0),
        (PERSON, 2.0),
        (Box(60.0, 60.0, 6.0, 9.0, 2), 1.25),  # enlarging
    ],
)
def test_matrix_follows_the_documented_formulas(astronaut, box, padding):
    """Catches a swapped aspect (H/W), W/s instead of UDP's (W-1)/s, a sign or padding slip."""
    crop = crop_box(astronaut, box, SIZE, padding)
    assert crop.affine.dtype == np.float32 and crop.affine.shape == (2, 3)
    np.testing.assert_allclose(crop.affine, matrix64(box, SIZE, padding), rtol=1e-6, atol=1e-5)


def test_matrix_and_pixels_match_upstreams_float32_arithmetic_exactly(astronaut):
    """Catches computing in float64: it moves ~60% of crops by a grey level somewhere."""
    for i, box in enumerate(random_boxes(120, astronaut.shape[:2], seed=0)):
        size = SIZE if i % 2 else (1024, 768)
        padding = (1.25, 1.0, 1.6)[i % 3]
        crop = crop_box(astronaut, box, size, padding)
        expected = matrix32(box, size, padding)
        assert np.array_equal(crop.affine, expected), box
        assert np.array_equal(crop.pixels, upstream_warp(astronaut, expected, size)), box


def test_float64_reference_differs_by_at_most_one_grey_level(astronaut):
    """The plain-math matrix gives the same crops up to rounding (the difference figure)."""
    worst = 0
    for box in random_boxes(60, astronaut.shape[:2], seed=1):
        crop = crop_box(astronaut, box, SIZE)
        reference = upstream_warp(astronaut, matrix64(box, SIZE).astype(np.float32), SIZE)
        worst = max(worst, int(np.abs(crop.pixels.astype(int) - reference).max()))
    assert worst <= 1


def test_shrinking_is_bilinear_and_enlarging_is_bicubic(astronaut):
    """Catches the wrong interpolation, or the threshold on the wrong side of 1."""
    shrink = crop_box(astronaut, PERSON, SIZE)  # ~150 image px -> 48 crop px
    m = matrix32(PERSON, SIZE)
    assert m[0, 0] < 1
    assert np.array_equal(
        shrink.pixels, cv2.warpAffine(astronaut, m, (48, 64), flags=cv2.INTER_AREA)
    )
    assert np.array_equal(
        shrink.pixels, cv2.warpAffine(astronaut, m, (48, 64), flags=cv2.INTER_LINEAR)
    )  # warpAffine runs INTER_AREA as bilinear; if OpenCV ever changes that, this fails
    assert not np.array_equal(
        shrink.pixels, cv2.warpAffine(astronaut, m, (48, 64), flags=cv2.INTER_CUBIC)
    )
    small = Box(50.0, 30.0, 12.0, 16.0, 1)
    grow = crop_box(astronaut, small, SIZE)
    m = matrix32(small, SIZE)
    assert m[0, 0] > 1
    assert np.array_equal(
        grow.pixels, cv2.warpAffine(astronaut, m, (48, 64), flags=cv2.INTER_CUBIC)
    )
    assert not np.array_equal(
        grow.pixels, cv2.warpAffine(astronaut, m, (48, 64), flags=cv2.INTER_LINEAR)
    )


def bilinear(image: np.ndarray, x: float, y: float) -> np.ndarray:
    """Image value at (x, y), pixel centres on integers, zero outside: no OpenCV."""
    x0, y0 = math.floor(x), math.floor(y)
    fx, fy = x - x0, y - y0
    value = np.zeros(3)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            yy, xx = y0 + dy, x0 + dx
            if 0 <= yy < image.shape[0] and 0 <= xx < image.shape[1]:
                value += wy * wx * image[yy, xx]
    return value


def test_a_shrinking_crop_samples_where_the_inverse_matrix_points(astronaut):
    """Catches an inverted map (WARP_INVERSE_MAP), a (W, H) dsize swap, a half-pixel shift."""
    crop = crop_box(astronaut, PERSON, SIZE)
    inverse = np.linalg.inv(np.vstack([matrix64(PERSON, SIZE), [0, 0, 1]]))
    diffs = []
    for v, u in [(0, 0), (10, 5), (31, 23), (32, 24), (50, 40), (63, 47), (20, 33)]:
        x, y, _ = inverse @ (u, v, 1)
        diffs.append(np.abs(bilinear(astronaut, x, y) - crop.pixels[v, u]).max())
    # OpenCV quantizes positions to 1/32 pixel and weights to 1/1024, then rounds
    assert max(diffs) <= 1, diffs


def test_known_points_land_where_udp_puts_them(astronaut):
    """Box centre -> crop centre ((W-1)/2, (H-1)/2); the padded box's corners -> the corner
    pixels, with the image's values there (padding 1 and a 48 x 64 box make them integers)."""
    crop = crop_box(astronaut, PERSON, SIZE)
    centre = crop.affine @ (PERSON.x + PERSON.w / 2, PERSON.y + PERSON.h / 2, 1)
    np.testing.assert_allclose(centre, ((48 - 1) / 2, (64 - 1) / 2), atol=1e-4)
    for box in (Box(30.0, 20.0, 48.0, 64.0, 0), Box(40.0, 50.0, 24.0, 32.0, 1)):  # shrink, grow
        crop = crop_box(astronaut, box, SIZE, padding=1.0)
        np.testing.assert_allclose(crop.affine @ (box.x, box.y, 1), (0, 0), atol=1e-4)
        far = crop.affine @ (box.x + box.w, box.y + box.h, 1)
        np.testing.assert_allclose(far, (47, 63), atol=1e-4)
        top, left = int(box.y), int(box.x)
        assert np.array_equal(crop.pixels[0, 0], astronaut[top, left])
        bottom, right = int(box.y + box.h), int(box.x + box.w)
        assert np.array_equal(crop.pixels[63, 47], astronaut[bottom, right])


def test_a_box_partly_outside_the_image_has_a_black_border(astronaut):
    """Catches a replicated or reflected border, or a box clipped to the image."""
    box = Box(90.0, -20.0, 60.0, 80.0, 0)  # over the right and top edges
    crop = crop_box(astronaut, box, SIZE)
    inverse = np.linalg.inv(np.vstack([crop.affine.astype(np.float64), [0, 0, 1]]))
    v, u = np.mgrid[0:64, 0:48]
    x, y, _ = inverse @ np.stack([u.ravel(), v.ravel(), np.ones(u.size)])
    outside = ((x > 128) | (y < -1)).reshape(64, 48)
    inside = ((x < 126) & (y > 1)).reshape(64, 48)
    assert outside.sum() > 500 and inside.sum() > 500
    assert (crop.pixels[outside] == 0).all()
    assert (crop.pixels[inside].max(axis=1) > 0).mean() > 0.95
    assert np.array_equal(crop.pixels, upstream_warp(astronaut, matrix32(box, SIZE), SIZE))


def test_padding_scales_the_crop_around_the_same_centre(astronaut):
    """Catches padding ignored, or applied to the center as well as the scale."""
    tight = crop_box(astronaut, PERSON, SIZE, padding=1.0).affine
    loose = crop_box(astronaut, PERSON, SIZE, padding=2.0).affine
    np.testing.assert_allclose(loose[0, 0] / tight[0, 0], 0.5, rtol=1e-6)
    centre = (PERSON.x + PERSON.w / 2, PERSON.y + PERSON.h / 2, 1)
    np.testing.assert_allclose(tight @ centre, loose @ centre, atol=1e-4)
    a = crop_box(astronaut, PERSON, SIZE, padding=1.0).pixels
    b = crop_box(astronaut, PERSON, SIZE, padding=2.0).pixels
    assert not np.array_equal(a, b)


@pytest.mark.parametrize(
    ("box", "reason"),
    [
        (Box(math.nan, 0.0, 10.0, 10.0, 3), "box 3 has a NaN or infinite coordinate"),
        (Box(0.0, 0.0, math.inf, 10.0, 3), "NaN or infinite"),
        (Box(0.0, 0.0, 0.0, 10.0, 3), "box 3 has zero or negative size (w = 0, h = 10)"),
        (Box(5.0, 5.0, 10.0, -2.0, 3), "zero or negative size"),
        (Box(128.0, 0.0, 10.0, 10.0, 3), "lies entirely outside the 128x128 image"),
        (Box(-10.0, 0.0, 10.0, 10.0, 3), "entirely outside"),
        (Box(0.0, 200.0, 10.0, 10.0, 3), "entirely outside"),
        (Box(0.0, -10.0, 10.0, 10.0, 3), "entirely outside"),
    ],
)
def test_bad_boxes_are_refused_with_their_reason(astronaut, box, reason):
    """Catches a NaN crop of garbage, or a black crop of nothing, stored as a row."""
    with pytest.raises(ImageError) as caught:
        crop_box(astronaut, box, SIZE)
    assert reason in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "box",
    [
        Box(0.0, 0.0, 3e38, 10.0, 4),  # padded width overflows: an infinite scale
        Box(10.0, 10.0, 1e-38, 1e-38, 4),  # x + w rounds to x: a zero scale
    ],
    ids=["huge", "tiny"],
)
def test_a_box_beyond_float32_arithmetic_is_refused_without_a_warning(astronaut, box):
    """Catches a NaN or infinite matrix warping a black crop that is stored as a row, and
    numpy's RuntimeWarnings (printed with a source line) on the way."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageError) as caught:
            crop_box(astronaut, box, SIZE)
    assert "is too large or too small to crop in float32 arithmetic" in str(caught.value)
    assert str(caught.value).startswith("box 4 (w = ")


def test_a_box_barely_inside_is_cropped(astronaut):
    crop = crop_box(astronaut, Box(-9.5, 127.5, 10.0, 10.0, 0), SIZE)
    assert crop.pixels.shape == (*SIZE, 3) and crop.pixels.dtype == np.uint8


def test_read_rgb_is_the_decoders_image_unresampled(tmp_path):
    """Same orientation, modes and reasons as whole-image rows; catches a missed EXIF turn."""
    photo = Image.open(DATA / "chelsea.jpg")
    exif = Image.Exif()
    exif[274] = 6  # rotate 90 degrees on display
    photo.save(tmp_path / "turned.jpg", exif=exif, quality=95)
    pixels = read_rgb(str(tmp_path / "turned.jpg"))
    assert pixels.shape == (photo.width, photo.height, 3)
    expected = np.asarray(Image.open(tmp_path / "turned.jpg").transpose(Image.Transpose.ROTATE_270))
    assert np.array_equal(pixels, expected)
    grey16 = np.arange(12 * 10, dtype=np.uint16).reshape(12, 10) * 500
    Image.fromarray(grey16).save(tmp_path / "g16.png")
    assert np.array_equal(
        read_rgb(str(tmp_path / "g16.png")),
        decode_image(str(tmp_path / "g16.png"), (12, 10)).pixels,
    )
    (tmp_path / "text.jpg").write_text("not an image")
    with pytest.raises(ImageError, match="not an image"):
        read_rgb(str(tmp_path / "text.jpg"))
    with pytest.raises(ImageError, match="file not found"):
        read_rgb(str(tmp_path / "missing.jpg"))


def test_real_photo_at_the_zoo_size(astronaut):
    crop = crop_box(read_rgb(str(DATA / "astronaut.png")), PERSON, (1024, 768))
    assert crop.pixels.shape == (1024, 768, 3) and crop.pixels.dtype == np.uint8
    assert np.array_equal(
        crop.pixels, upstream_warp(astronaut, matrix32(PERSON, (1024, 768)), (1024, 768))
    )
