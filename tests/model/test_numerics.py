"""Numbers pinned by hand: what a swapped channel, a wrong scale, a swapped resampling
filter or a one-sided range check would change, and the golden vectors would not."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sapiens2_cli.config.choices import StorageDtype
from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.inputs.decode import resize_to
from sapiens2_cli.model import normalize_pixels
from sapiens2_cli.reduce.cast import check_range, to_storage


def test_normalization_channel_order_and_0_255_scale():
    """Bug: BGR statistics, or mean/std applied to pixels divided by 255 (the golden
    inputs are already normalized, so they cannot see either)."""
    pixel = torch.tensor([255, 0, 128], dtype=torch.uint8).view(1, 3, 1, 1)
    # by hand: (255 - 123.675) / 58.395, (0 - 116.28) / 57.12, (128 - 103.53) / 57.375
    expected = torch.tensor([2.2489083, -2.0357143, 0.4264924]).view(1, 3, 1, 1)
    torch.testing.assert_close(normalize_pixels(pixel), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize(("size", "target"), [((40, 10), (20, 30)), ((10, 40), (30, 20))])
def test_resize_area_averages_the_shrinking_axis_and_bicubic_grows_the_other(size, target):
    """Bug: the filters swapped (bicubic to shrink, box to grow), or one filter for both
    axes. Reference: Pillow, one axis at a time, with the filter each axis calls for."""
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8))
    (w, h), (tw, th) = size, target
    by_width = image.resize((tw, h), Image.Resampling.BOX if tw < w else Image.Resampling.BICUBIC)
    expected = by_width.resize(
        (tw, th), Image.Resampling.BOX if th < h else Image.Resampling.BICUBIC
    )
    got = resize_to(image, tw, th)
    assert got.size == (tw, th)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))


def test_box_shrink_is_the_mean_of_the_pixels_it_covers():
    """The BOX half of the reference above, by hand: halving the width averages pairs."""
    rng = np.random.default_rng(1)
    columns = rng.integers(0, 128, 40, dtype=np.uint8) * 2  # even: pair means are exact
    pixels = np.repeat(np.broadcast_to(columns[None, :, None], (10, 40, 1)), 3, axis=2)
    pairs = columns.reshape(20, 2).astype(float).mean(axis=1)
    got = np.asarray(resize_to(Image.fromarray(np.ascontiguousarray(pixels)), 20, 10))
    np.testing.assert_allclose(got[:, :, 0], np.broadcast_to(pairs, (10, 20)), atol=1)


@pytest.mark.parametrize("value", [7e4, -7e4, -1e6])
def test_float16_overflow_on_either_side_is_refused(value):
    """Bug: checking only the largest value, so a feature of -1e6 became -inf silently."""
    stored, peak, *_ = to_storage(torch.tensor([[1.0, value]]), StorageDtype.FLOAT16)
    assert torch.isinf(stored).any()  # what would have been written
    with pytest.raises(Sapiens2Error, match=r"beyond float16's range.*--dtype float32"):
        check_range(peak.item(), StorageDtype.FLOAT16)
    check_range(peak.item(), StorageDtype.FLOAT32)
