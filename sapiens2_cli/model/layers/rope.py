"""2D rotary position embedding, computed in bfloat16 exactly as upstream does.

The tables and the rotation run in bf16 whatever the model dtype: the official
features depend on that rounding (about 4e-2 away from a float32 RoPE).
"""

from __future__ import annotations

import math

import torch
from torch import nn

ROPE_DTYPE = torch.bfloat16


def rope_periods(head_dim: int, base: float = 100.0, device=None) -> torch.Tensor:
    """base ** (2i / (Dh/2)) for i < Dh/4: one period per (axis, frequency) pair."""
    exponents = (
        2 * torch.arange(head_dim // 4, device=device, dtype=torch.float32) / (head_dim // 2)
    )
    return base**exponents


def rope_tables(
    periods: torch.Tensor, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """sin and cos tables, each (h*w, Dh), bf16, for an h x w grid of patches."""
    periods = periods.to(ROPE_DTYPE)
    dd = {"device": periods.device, "dtype": ROPE_DTYPE}
    coords_h = torch.arange(0.5, height, **dd) / height
    coords_w = torch.arange(0.5, width, **dd) / width
    coords = torch.stack(torch.meshgrid(coords_h, coords_w, indexing="ij"), dim=-1)  # (h, w, 2)
    coords = 2.0 * coords.flatten(0, 1) - 1.0  # (h*w, 2) in [-1, 1]
    angles = 2 * math.pi * coords[:, :, None] / periods[None, None, :]  # (h*w, 2, Dh/4)
    angles = angles.flatten(1, 2).tile(2)  # (h*w, Dh)
    return torch.sin(angles), torch.cos(angles)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """[x1, x2] -> [-x2, x1] over the two halves of the last dimension."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
    """Rotate the trailing h*w positions of x (B, heads, N, Dh); prefix tokens pass through.

    All of x makes a round trip through bf16, prefix tokens included, as upstream does.
    """
    dtype = x.dtype
    x = x.to(ROPE_DTYPE)
    num_prefix = x.shape[-2] - sin.shape[-2]
    prefix, patches = x[..., :num_prefix, :], x[..., num_prefix:, :]
    patches = patches * cos + rotate_half(patches) * sin
    return torch.cat((prefix, patches), dim=-2).to(dtype)


class RopeEmbedding(nn.Module):
    """Holds `periods` (a checkpoint buffer, `rope_embed.periods`) and makes the tables."""

    def __init__(self, head_dim: int, base: float = 100.0, device=None) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.base = base
        self.register_buffer("periods", torch.empty(head_dim // 4, device=device))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if not self.periods.is_meta:
            self.periods.copy_(rope_periods(self.head_dim, self.base, self.periods.device))

    def forward(self, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        return rope_tables(self.periods, height, width)
