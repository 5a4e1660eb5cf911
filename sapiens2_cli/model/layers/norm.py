"""RMSNorm with a learned scale and no bias (block norms, QK-norm, final norm)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight over the last dimension.

    Computed in float32 and returned in the input's dtype, so bf16 activations (autocast
    or bf16 weights) are normed as accurately as float32 ones.
    """

    def __init__(self, dim: int, eps: float = 1e-6, device=None, dtype=None) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(dim, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if not self.weight.is_meta:
            nn.init.ones_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = F.rms_norm(x.float(), self.weight.shape, self.weight.float(), self.eps)
        return normed.to(x.dtype)


class LayerScale(nn.Module):
    """Per-channel scale on the attention branch (stored as `attn.gamma.weight`)."""

    def __init__(self, dim: int, init: float = 1e-5, device=None, dtype=None) -> None:
        super().__init__()
        self.init = init
        self.weight = nn.Parameter(torch.empty(dim, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if not self.weight.is_meta:
            nn.init.constant_(self.weight, self.init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight
