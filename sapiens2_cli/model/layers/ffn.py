"""SwiGLU feed-forward: w12 projects to two halves, SiLU(a) * b, then w3."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SwiGLUFFN(nn.Module):
    def __init__(self, dim: int, hidden_dim: int, device=None, dtype=None) -> None:
        super().__init__()
        self.w12 = nn.Linear(dim, 2 * hidden_dim, device=device, dtype=dtype)
        self.w3 = nn.Linear(hidden_dim, dim, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.w12(x).chunk(2, dim=-1)  # (B, N, F) each
        return self.w3(F.silu(a) * b)
