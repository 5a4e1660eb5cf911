"""Which tokens of the blocks' outputs are kept, and in which layout: the backbone's
`forward_kept`, as timm's `forward_intermediates(output_fmt=...)` and DINOv3's
`get_intermediate_layers(reshape=..., return_class_token=...)` give them.

`kept_shape` gives the same shape from numbers alone, so a caller can size its output
before (or without) running the model.
"""

from __future__ import annotations

import torch

from sapiens2_cli.choices import Layout, TokenMode


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


def kept_shape(
    tokens: TokenMode | str,
    layout: Layout | str,
    n_layers: int,
    grid: tuple[int, int],
    dim: int,
    prefix: int,
) -> tuple[int, ...]:
    """The shape of one image's kept features, (n_layers, ...), as `select_tokens` gives
    them from blocks with `prefix` tokens before the h*w patches."""
    if tokens in (TokenMode.CLS, TokenMode.MEAN):
        return (n_layers, dim)
    if tokens == TokenMode.ALL:
        return (n_layers, prefix + grid[0] * grid[1], dim)
    if layout == Layout.MAP:
        return (n_layers, dim, *grid)
    return (n_layers, grid[0] * grid[1], dim)
