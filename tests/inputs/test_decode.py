"""Decoding and preprocessing: every mode to 8-bit RGB, EXIF, resizing, refusals."""

from __future__ import annotations

import numpy as np
import pytest
from hostile_corpus import make_corpus
from paths import DATA
from PIL import Image, ImageOps

from sapiens2_cli.inputs import decode as decode_module
from sapiens2_cli.inputs.decode import FILL, ImageError, decode_image, read_rgb

SIZE = (64, 48)  # (H, W)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"))


def test_every_good_file_becomes_rgb_at_the_model_size(corpus):
    good, _ = corpus
    for path, original in good.items():
        decoded = decode_image(path, SIZE)
        assert decoded.pixels.shape == (*SIZE, 3) and decoded.pixels.dtype == np.uint8, path
        assert decoded.original_size == original, path
        assert decoded.content_box is None


@pytest.mark.parametrize(
    "name", ["truncated.jpg", "empty.jpg", "text.jpg", "bomb.png", "missing.jpg"]
)
def test_bad_files_give_one_line_reasons(corpus, name):
    _, bad = corpus
    path = next(iter(bad)).rsplit("/", 1)[0] + "/" + name
    with pytest.raises(ImageError) as caught:
        decode_image(path, SIZE)
    reason = str(caught.value)
    assert "\n" not in reason
    assert bad.get(path, "file not found") in reason


def test_an_image_at_the_target_size_is_untouched(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (*SIZE, 3), np.uint8)
    Image.fromarray(pixels).save(tmp_path / "exact.png")
    assert np.array_equal(decode_image(str(tmp_path / "exact.png"), SIZE).pixels, pixels)


def test_shrinking_averages_areas_and_enlarging_is_bicubic(tmp_path):
    big = np.random.default_rng(1).integers(0, 256, (128, 96, 3), np.uint8)
    Image.fromarray(big).save(tmp_path / "big.png")
    blocks = big.reshape(64, 2, 48, 2, 3).astype(np.float64).mean(axis=(1, 3))
    shrunk = decode_image(str(tmp_path / "big.png"), SIZE).pixels
    assert np.abs(shrunk - blocks).max() <= 1  # 2x2 averages, up to rounding
    small = Image.fromarray(big[:32, :24])
    small.save(tmp_path / "small.png")
    grown = np.asarray(small.resize((48, 64), Image.Resampling.BICUBIC))
    assert np.array_equal(decode_image(str(tmp_path / "small.png"), SIZE).pixels, grown)


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257 * 100, 32768, 65535]] * 4, np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    pixels = decode_image(str(tmp_path / "g16.png"), (4, 4)).pixels
    assert pixels[0, :, 0].tolist() == [0, 100, 128, 255]
    assert (pixels[..., 0] == pixels[..., 2]).all()


def test_alpha_is_composited_on_the_mean_colour(tmp_path):
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[:, :8] = (255, 0, 0, 255)  # opaque red left half, transparent right half
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    pixels = decode_image(str(tmp_path / "a.png"), (16, 16)).pixels
    assert pixels[0, 0].tolist() == [255, 0, 0]
    assert pixels[0, 15].tolist() == list(FILL)


def test_exif_orientation_is_applied(tmp_path):
    photo = Image.open(DATA / "chelsea.jpg")
    exif = Image.Exif()
    exif[274] = 6
    photo.save(tmp_path / "r.jpg", exif=exif, quality=95)
    decoded = decode_image(str(tmp_path / "r.jpg"), (48, 32))
    assert decoded.original_size == (photo.width, photo.height)  # portrait after rotation
    upright = np.asarray(photo.transpose(Image.Transpose.ROTATE_270).resize((32, 48)), np.int16)
    assert np.abs(decoded.pixels.astype(np.int16) - upright).mean() < 12


@pytest.mark.parametrize("orientation", [5, 6, 7, 8])
def test_every_quarter_turn_swaps_the_original_size(tmp_path, orientation):
    """Catches 5 (transpose) and 7 (transverse) turned by Pillow but not counted as quarter
    turns: original_size (and the draft size) left as stored. Pixels: Pillow's own turn."""
    path = _photo_jpeg(tmp_path / "turned.jpg", 60, 40, orientation)  # stored 60 wide
    with Image.open(path) as im:
        upright = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    assert upright.shape == (60, 40, 3)
    decoded = decode_image(path, (60, 40))  # the upright size: no resampling
    assert decoded.original_size == (60, 40)
    assert np.array_equal(decoded.pixels, upright)
    assert np.array_equal(read_rgb(path), upright)


def test_letterbox_keeps_aspect_and_records_the_content_box():
    decoded = decode_image(str(DATA / "coffee.jpg"), SIZE, "letterbox")  # 133 x 200, landscape
    top, left, h, w = decoded.content_box
    assert (left, w) == (0, 48) and h == round(133 * 48 / 200) and top == (64 - h) // 2
    assert (decoded.pixels[:top] == FILL).all() and (decoded.pixels[top + h :] == FILL).all()


def test_float_images_are_refused(tmp_path):
    Image.fromarray(np.ones((8, 8), np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(ImageError, match="float"):
        decode_image(str(tmp_path / "f.tif"), (16, 16))


def _photo_jpeg(path, width: int, height: int, orientation: int = 1):
    """A real photo enlarged to width x height (Pillow's W x H), saved as JPEG."""
    photo = Image.open(DATA / "chelsea.jpg").convert("RGB").resize((width, height))
    exif = Image.Exif()
    exif[274] = orientation
    photo.save(path, exif=exif, quality=90)
    return str(path)


@pytest.fixture
def decoded_sizes(monkeypatch):
    """The upright (W, H) of each image as it reaches the resize: the scale decoded at."""
    sizes = []
    original = decode_module.resize_to

    def spy(im, width, height):
        sizes.append(im.size)
        return original(im, width, height)

    monkeypatch.setattr(decode_module, "resize_to", spy)
    return sizes


@pytest.mark.parametrize(
    ("image_wh", "orientation", "size", "resize", "decoded_wh"),
    [
        ((3072, 4096), 1, (1024, 768), "stretch", (1536, 2048)),  # 1/2: exactly twice
        ((3072, 4096), 1, (512, 384), "stretch", (768, 1024)),  # 1/4, not 1/8 (below 2x)
        ((4000, 3000), 1, (1024, 768), "stretch", (4000, 3000)),  # 1/2 gives 1500 < 2048
        ((4000, 3000), 1, (1024, 768), "letterbox", (2000, 1500)),  # content 576 x 768
        ((4096, 3072), 6, (1024, 768), "stretch", (1536, 2048)),  # stored on its side
        ((4096, 3072), 5, (1024, 768), "stretch", (1536, 2048)),  # transposed
        ((4096, 3072), 7, (1024, 768), "stretch", (1536, 2048)),  # transversed
    ],
)
def test_jpeg_draft_decodes_at_the_smallest_scale_at_least_twice_the_target(
    tmp_path, decoded_sizes, image_wh, orientation, size, resize, decoded_wh
):
    path = _photo_jpeg(tmp_path / "big.jpg", *image_wh, orientation)
    full = decode_image(path, size, resize)
    drafted = decode_image(path, size, resize, draft=True)
    upright_wh = image_wh[::-1] if orientation in (5, 6, 7, 8) else image_wh
    assert decoded_sizes == [upright_wh, decoded_wh]  # off by default: full scale
    assert drafted.original_size == full.original_size
    assert drafted.content_box == full.content_box
    difference = np.abs(drafted.pixels.astype(np.int16) - full.pixels.astype(np.int16))
    assert difference.mean() < 1.5  # the same picture, same way up
