"""`extract --pool K`: the mean of each KxK block of patch tokens, applied on the device
between the backbone's kept features and the projection."""

from __future__ import annotations

import torch

from sapiens2_cli.config.choices import Layout, TokenMode


def pool_patches(
    kept: torch.Tensor,
    tokens: TokenMode,
    layout: Layout,
    grid: tuple[int, int],
    pool: int,
) -> torch.Tensor:
    """Kept features (B, L, ...) of an h x w grid -> those of the h/K x w/K grid.

    The patches are averaged in float32 (prefix tokens stay, as float32); cls and mean
    rows, which keep no grid, and K = 1 pass through unchanged.
    """
    if pool == 1 or tokens in (TokenMode.CLS, TokenMode.MEAN):
        return kept
    pooled_grid = (grid[0] // pool, grid[1] // pool)
    if layout == Layout.MAP:  # (B, L, D, h, w): pool the row-major tokens it views
        patches = kept.permute(0, 1, 3, 4, 2).flatten(2, 3)
        pooled = pool_patches(patches, tokens, Layout.TOKENS, grid, pool)
        return pooled.unflatten(2, pooled_grid).permute(0, 1, 4, 2, 3)
    prefix = kept.shape[2] - grid[0] * grid[1]
    blocks = kept[:, :, prefix:].float().unflatten(2, (pooled_grid[0], pool, pooled_grid[1], pool))
    pooled = blocks.mean((3, 5)).flatten(2, 3)  # (B, L, h/K * w/K, D)
    return torch.cat((kept[:, :, :prefix].float(), pooled), dim=2) if prefix else pooled
