"""Pre-norm transformer block: x + Attn(ln1(x)), then x + FFN(ln2(x))."""

from __future__ import annotations

import torch
from torch import nn

from sapiens2_cli.model.layers.attention import Attention
from sapiens2_cli.model.layers.ffn import SwiGLUFFN
from sapiens2_cli.model.layers.norm import RMSNorm


class Block(nn.Module):
    """One Sapiens2 block; the tokenizer's blocks turn off QK-norm and LayerScale."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        num_kv_heads: int,
        ffn_dim: int,
        qk_norm: bool = True,
        layer_scale: bool = True,
        eps: float = 1e-6,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.ln1 = RMSNorm(dim, eps, **dd)
        self.attn = Attention(dim, num_heads, num_kv_heads, qk_norm, layer_scale, eps, **dd)
        self.ln2 = RMSNorm(dim, eps, **dd)
        self.ffn = SwiGLUFFN(dim, ffn_dim, **dd)

    def forward(
        self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), rope)
        return x + self.ffn(self.ln2(x))
