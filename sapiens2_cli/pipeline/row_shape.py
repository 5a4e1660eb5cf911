"""The shape of one row of OUT, from the options alone: what the backbone keeps
(`model.tokens.kept_shape`), then `--pool` and `--project`. No tensor is made, so the
writer can be opened before the model runs."""

from __future__ import annotations

from sapiens2_cli.choices import Layout, TokenMode
from sapiens2_cli.model.tokens import kept_shape


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
    """One image's row, (n_layers, ...): `prefix` tokens before the h*w patches of width
    `dim`, pooled by `pool` (the grid becomes h/K x w/K), projected to `k` values if given."""
    pooled_grid = (grid[0] // pool, grid[1] // pool)
    shape = list(kept_shape(tokens, layout, n_layers, pooled_grid, dim, prefix))
    if k is not None:
        shape[1 if layout == Layout.MAP else -1] = k  # the D values: (L, D, h, w) or last
    return tuple(shape)
