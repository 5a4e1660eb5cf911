"""Multi-head self-attention with optional grouped-query heads, QK-norm, RoPE and LayerScale."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sapiens2_cli.model.layers.norm import LayerScale, RMSNorm
from sapiens2_cli.model.layers.rope import apply_rope


class Attention(nn.Module):
    """Self-attention as the Sapiens2 blocks use it.

    Args:
        dim: token width D.
        num_heads: query heads; head dim is D / num_heads.
        num_kv_heads: key/value heads; kv head j serves query heads j*g .. j*g+g-1.
        qk_norm: RMSNorm q and k per head (`q_norm`, `k_norm`); off in the tokenizer.
        layer_scale: scale the output per channel (`gamma`); off in the tokenizer.
        eps: RMSNorm epsilon.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        num_kv_heads: int,
        qk_norm: bool = True,
        layer_scale: bool = True,
        eps: float = 1e-6,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        if num_heads % num_kv_heads:
            raise ValueError(f"{num_heads} query heads cannot share {num_kv_heads} kv heads")
        dd = {"device": device, "dtype": dtype}
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = dim // num_heads
        kv_dim = num_kv_heads * self.head_dim
        self.wq = nn.Linear(dim, dim, **dd)
        self.wk = nn.Linear(dim, kv_dim, **dd)
        self.wv = nn.Linear(dim, kv_dim, **dd)
        self.proj = nn.Linear(dim, dim, **dd)
        self.q_norm = RMSNorm(self.head_dim, eps, **dd) if qk_norm else None
        self.k_norm = RMSNorm(self.head_dim, eps, **dd) if qk_norm else None
        self.gamma = LayerScale(dim, **dd) if layer_scale else None

    def forward(
        self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        B, N, D = x.shape
        q = self.wq(x).view(B, N, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, N, Dh)
        k = self.wk(x).view(B, N, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.wv(x).view(B, N, self.num_kv_heads, self.head_dim).transpose(1, 2)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            sin, cos = rope
            q, k = apply_rope(q, sin, cos), apply_rope(k, sin, cos)
        grouped = self.num_kv_heads != self.num_heads
        out = F.scaled_dot_product_attention(q, k, v, enable_gqa=grouped)  # (B, H, N, Dh)
        out = self.proj(out.transpose(1, 2).reshape(B, N, D))
        return out if self.gamma is None else self.gamma(out)
