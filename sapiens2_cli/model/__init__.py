"""The Sapiens2 backbone in pure torch: configs, layers, the model and checkpoint loading."""

from __future__ import annotations

import torch

from sapiens2_cli.model.backbone import Sapiens2Backbone
from sapiens2_cli.model.checkpoint import CheckpointInfo, inspect_checkpoint, load_backbone
from sapiens2_cli.model.config import (
    ARCHS,
    PIXEL_MEAN,
    PIXEL_STD,
    Sapiens2Config,
    get_config,
    normalize_arch_name,
)
from sapiens2_cli.model.normalize import normalize_pixels


def build_backbone(
    arch: str | Sapiens2Config,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Sapiens2Backbone:
    """A randomly initialised backbone (for benchmarks and tests); `device="meta"` costs
    no memory. Use `load_backbone` for real weights."""
    config = get_config(arch) if isinstance(arch, str) else arch
    return Sapiens2Backbone(config, device=device, dtype=dtype).eval()


__all__ = [
    "ARCHS",
    "PIXEL_MEAN",
    "PIXEL_STD",
    "CheckpointInfo",
    "Sapiens2Backbone",
    "Sapiens2Config",
    "build_backbone",
    "get_config",
    "inspect_checkpoint",
    "load_backbone",
    "normalize_arch_name",
    "normalize_pixels",
]
