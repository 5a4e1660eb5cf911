"""Parameters and FLOPs of a backbone, counted on the meta device (no memory, no weights).

FLOPs follow `torch.utils.flop_counter.FlopCounterMode`: 2 per multiply-add in every
convolution and matrix product, attention included; norms, activations and RoPE are
not counted. On the meta device `scaled_dot_product_attention` (with `enable_gqa`)
runs its math decomposition, so attention shows up as two `bmm` per block, QKᵀ and
softmax·V over all query heads: 4·N²·D FLOPs per block for N tokens of width D.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from torch.utils.flop_counter import FlopCounterMode

from sapiens2_cli.model import Sapiens2Config, build_backbone

#: What each counted aten op is in this model.
_OP_LABELS = {"convolution": "patch_embed", "addmm": "linear", "mm": "linear", "bmm": "attention"}


@dataclass(frozen=True)
class ModelCost:
    """Size and per-image compute of one arch at one input size."""

    arch: str | None  # zoo name, None for a custom config
    image_size: tuple[int, int]  # (H, W)
    tokens: int  # N, prefix tokens included
    parameters: int
    flops_per_image: int  # 2 FLOPs per multiply-add, attention included
    flops_by_part: dict[str, int]  # patch_embed / linear / attention

    def as_dict(self) -> dict:
        return {
            "arch": self.arch,
            "image_size": list(self.image_size),
            "tokens": self.tokens,
            "parameters": self.parameters,
            "flops_per_image": self.flops_per_image,
            "flops_by_part": self.flops_by_part,
        }


@lru_cache(maxsize=32)
def count_cost(config: Sapiens2Config, height: int, width: int) -> ModelCost:
    """Count one image's forward pass at HxW; FLOPs grow linearly with the batch."""
    tokens = config.num_tokens(height, width)  # checks the size
    model = build_backbone(config, device="meta")
    pixels = torch.empty(1, 3, height, width, device="meta")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(pixels)
    by_part: dict[str, int] = {}
    for op, flops in counter.get_flop_counts()["Global"].items():
        name = str(op).split(".")[1]  # aten.addmm.default -> addmm
        label = _OP_LABELS.get(name, name)
        by_part[label] = by_part.get(label, 0) + flops
    return ModelCost(
        arch=config.name,
        image_size=(height, width),
        tokens=tokens,
        parameters=sum(p.numel() for p in model.parameters()),
        flops_per_image=counter.get_total_flops(),
        flops_by_part=by_part,
    )
