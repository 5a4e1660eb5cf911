"""The reductions' records and numerics, each pinned where a slip would go unseen: int8's
recorded worst error across batches and parts, the range int8 holds, and pooling's mean
taken in float32 whatever the precision."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sapiens2_cli.config.choices import Layout, StorageDtype, TokenMode
from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.reduce.cast import FLOAT16_MAX, INT8_MAX, check_range
from sapiens2_cli.reduce.losses import INT8, add_losses, int8_loss, join_reductions
from sapiens2_cli.reduce.pool import pool_patches


def int8_record() -> dict:
    return {INT8: {"norm": "l2", "per": "token", "loss": int8_loss()}}


def test_the_int8_max_error_is_the_largest_of_every_batch_not_the_last():
    record = int8_record()
    add_losses(record, np.array([0.01, 0.5], np.float32), None)
    add_losses(record, np.array([0.02, 0.03], np.float32), None)
    loss = record[INT8]["loss"]
    assert loss["relative_error_max"] == pytest.approx(0.5)
    assert loss["tokens"] == 4
    assert loss["relative_error_sum"] == pytest.approx(0.56)


def test_a_merge_keeps_the_largest_int8_error_of_any_part():
    parts = {}
    for name, errors in (("a", [0.01]), ("b", [0.4]), ("c", [0.2])):
        parts[name] = int8_record()
        add_losses(parts[name], np.array(errors, np.float32), None)
    joined = join_reductions(parts)[INT8]["loss"]
    assert joined["relative_error_max"] == pytest.approx(0.4)
    assert joined["tokens"] == 3


def test_int8_holds_features_beyond_float16s_range():
    # int8 values scaled by float16 scales reach 65,504 x 127.
    check_range(FLOAT16_MAX * 10, StorageDtype.INT8)
    check_range(FLOAT16_MAX * INT8_MAX, StorageDtype.INT8)
    with pytest.raises(Sapiens2Error, match="int8"):
        check_range(FLOAT16_MAX * INT8_MAX * 1.01, StorageDtype.INT8)
    with pytest.raises(Sapiens2Error, match="float16"):
        check_range(FLOAT16_MAX * 1.01, StorageDtype.FLOAT16)


@pytest.mark.parametrize("layout", [Layout.TOKENS, Layout.MAP])
def test_bf16_features_are_pooled_as_the_float32_mean_of_their_values(layout):
    # A --precision bf16 --pool 2 row must equal the float32 mean of the unpooled bf16 row:
    # a mean taken in bf16 then cast rounds each block's sum to 8 bits of mantissa.
    generator = torch.Generator().manual_seed(0)
    grid, dim = (4, 6), 16
    tokens = torch.randn(2, 1, grid[0] * grid[1], dim, generator=generator) * 100 + 1000
    kept = tokens.to(torch.bfloat16)
    if layout == Layout.MAP:
        kept = kept.unflatten(2, grid).permute(0, 1, 4, 2, 3)
    pooled = pool_patches(kept, TokenMode.PATCH, layout, grid, 2)
    assert pooled.dtype == torch.float32
    blocks = kept.float() if layout == Layout.TOKENS else kept.float().permute(0, 1, 3, 4, 2)
    blocks = blocks.reshape(2, 1, grid[0] // 2, 2, grid[1] // 2, 2, dim)
    want = blocks.mean((3, 5)).flatten(2, 3)
    if layout == Layout.MAP:
        want = want.unflatten(2, (grid[0] // 2, grid[1] // 2)).permute(0, 1, 4, 2, 3)
    torch.testing.assert_close(pooled, want, rtol=0, atol=1e-3)
