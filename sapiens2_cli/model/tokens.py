"""Which tokens of the blocks' outputs are kept, and in which layout: the backbone's
`forward_kept`, as timm's `forward_intermediates(output_fmt=...)` and DINOv3's
`get_intermediate_layers(reshape=..., return_class_token=...)` give them.

`row_shape` gives the same shape from numbers alone, so a caller (extract opening its
writer) can size its output without running the model; it also accounts for extract's
`--pool` and `--project`, device stages of the pipeline applied after this selection.
"""

from __future__ import annotations

import torch

from sapiens2_cli.config.choices import Layout, TokenMode


def select_tokens(
    outputs: list[torch.Tensor],
    tokens: TokenMode | str,
    layout: Layout | str,
    grid: tuple[int, int],
) -> torch.Tensor:
    """Block outputs, each (B, prefix + h*w, D), -> the kept features (B, n_layers, ...).

    Stays in the outputs' dtype (no float32 copy of every layer; `mean` accumulates in
    float32), so a later storage conversion is the only cast.
    """
    x = torch.stack(outputs, dim=1)  # (B, L, prefix + h*w, D)
    if tokens == TokenMode.ALL:
        return x
    if tokens == TokenMode.CLS:
        return x[:, :, 0]  # (B, L, D)
    patches = x[:, :, x.shape[2] - grid[0] * grid[1] :]  # (B, L, h*w, D), row-major
    if tokens == TokenMode.MEAN:
        return patches.mean(dim=2, dtype=torch.float32)  # (B, L, D)
    if layout == Layout.MAP:
        return patches.unflatten(2, grid).permute(0, 1, 4, 2, 3)  # (B, L, D, h, w)
    return patches


def row_shape(
    tokens: TokenMode | str,
    layout: Layout | str,
    n_layers: int,
    grid: tuple[int, int],
    dim: int,
    prefix: int,
    pool: int = 1,
    k: int | None = None,
) -> tuple[int, ...]:
    """One image's kept features, (n_layers, ...), from numbers alone: blocks of `prefix`
    tokens before the h*w patches of width `dim`, as `select_tokens` keeps them; then,
    as extract's later device stages reduce them, the grid pooled to h/K x w/K by `pool`
    and the D values projected to `k` if given."""
    h, w = grid[0] // pool, grid[1] // pool
    if tokens in (TokenMode.CLS, TokenMode.MEAN):
        shape = [n_layers, dim]
    elif tokens == TokenMode.ALL:
        shape = [n_layers, prefix + h * w, dim]
    elif layout == Layout.MAP:
        shape = [n_layers, dim, h, w]
    else:
        shape = [n_layers, h * w, dim]
    if k is not None:
        shape[1 if layout == Layout.MAP else -1] = k  # the D values: (L, D, h, w) or last
    return tuple(shape)
